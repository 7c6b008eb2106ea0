import { spawn } from 'node:child_process'
import path from 'node:path'
import { describe, expect, it } from 'vitest'

/**
 * The short forms of the soak runs (bench/soak.ts), as CI runs them: kill -9
 * of the daemon during writes (10 trials), a daemon dying inside its
 * commits, GC dying between its steps, and 8 processes of mixed work. Each
 * must end with nothing lost. The long forms (100 trials, 5 minutes of
 * load) are `npm run soak`.
 */

const SOAK = path.join(import.meta.dirname, '../../dist/bench/soak.js')

function soak(args: string[], timeoutMs: number): Promise<{ code: number; summary: Record<string, unknown>; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [SOAK, ...args, '--json'], { stdio: ['ignore', 'pipe', 'pipe'] })
    let out = ''
    let err = ''
    child.stdout.on('data', (d) => (out += d))
    child.stderr.on('data', (d) => (err += d))
    const timer = setTimeout(() => {
      child.kill('SIGKILL')
      reject(new Error(`soak ${args.join(' ')} timed out: ${err}`))
    }, timeoutMs)
    child.on('close', (code) => {
      clearTimeout(timer)
      try {
        resolve({ code: code ?? -1, summary: JSON.parse(out), stderr: err })
      } catch {
        reject(new Error(`soak ${args.join(' ')} exited ${code} without a summary: ${err}${out}`))
      }
    })
  })
}

describe('soak, short form', () => {
  it('10 kill -9 trials during random writes lose nothing fsynced', async () => {
    const r = await soak(['crash', '--trials', '10'], 300_000)
    expect(r.summary).toMatchObject({ trials: 10, losses: 0, errors: 0 })
    expect(r.code).toBe(0)
  }, 320_000)

  it('a daemon dying inside a commit (before the head moves, or before the log is dropped) loses nothing', async () => {
    const r = await soak(['crash', '--at', 'commit', '--trials', '3'], 300_000)
    expect(r.summary).toMatchObject({ trials: 3, losses: 0, errors: 0 })
    expect(r.code).toBe(0)
  }, 320_000)

  it('GC dying before it deletes, or before it rewrites the index, loses nothing; the next run finishes', async () => {
    const r = await soak(['crash', '--at', 'gc', '--trials', '2'], 300_000)
    expect(r.summary).toMatchObject({ trials: 2, losses: 0, errors: 0 })
    expect(r.code).toBe(0)
  }, 320_000)

  it('8 processes of mixed work: no error, everything reads back after a remount, the portal (log and cache) within its cap', async () => {
    const r = await soak(['load', '--procs', '8', '--seconds', '20'], 300_000)
    expect(r.summary.errors).toBe(0)
    expect(r.summary.files_mismatched).toBe(0)
    expect(r.summary.files_checked_after_remount as number).toBeGreaterThan(100)
    // Both the daemon's accounting and the files on disk, sampled while the workers ran.
    const portal = r.summary.portal_bytes as { max: number; on_disk_max: number; cap: number }
    expect(portal.on_disk_max).toBeGreaterThan(0)
    expect(portal.max).toBeLessThanOrEqual(portal.cap)
    expect(portal.on_disk_max).toBeLessThanOrEqual(portal.cap)
    expect(r.code).toBe(0)
  }, 320_000)

  it('bad arguments are usage errors', async () => {
    const bad = await new Promise<number>((resolve) => spawn(process.execPath, [SOAK, 'crash', '--at', 'nowhere']).on('close', (c) => resolve(c ?? -1)))
    expect(bad).toBe(2)
  }, 30_000)
})
