import { mkdtempSync, readdirSync, readlinkSync, rmSync, unlinkSync, writeFileSync } from 'node:fs'
import type { FileHandle } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { OpenFiles } from '../../src/portal/open-files.js'

const dir = mkdtempSync(path.join(os.tmpdir(), 's0fs-open-files-'))
afterAll(() => rmSync(dir, { recursive: true, force: true }))

function file(name: string, text: string): string {
  const p = path.join(dir, name)
  writeFileSync(p, text)
  return p
}

const readAll = async (h: FileHandle) => (await h.readFile()).toString()
/** Descriptors open on this test's files (other tests in this process open and close their own meanwhile). */
const openFds = () =>
  readdirSync('/proc/self/fd').filter((fd) => {
    try {
      return readlinkSync(`/proc/self/fd/${fd}`).startsWith(dir + path.sep)
    } catch {
      return false // closed since the listing
    }
  }).length

/** Waits (up to 5 s) for the count of open descriptors on this test's files to reach `n`, then checks it is exactly that. */
async function settlesTo(n: number): Promise<void> {
  for (let i = 0; i < 500 && openFds() !== n; i++) await new Promise((r) => setTimeout(r, 10))
  expect(openFds()).toBe(n)
}

describe('OpenFiles', () => {
  it('keeps a handle open between reads: a file deleted after its first read still reads, until cleared', async () => {
    const files = new OpenFiles(4)
    const p = file('a', 'window a')
    expect(await files.with(p, readAll)).toBe('window a')
    unlinkSync(p)
    expect(await files.with(p, (h) => h.read(Buffer.alloc(6), 0, 6, 0).then((r) => r.buffer.toString()))).toBe('window')
    files.clear()
    expect(await files.with(p, readAll)).toBeUndefined()
  })

  it('does not remember a file that could not be opened', async () => {
    const files = new OpenFiles(4)
    const p = path.join(dir, 'later')
    expect(await files.with(p, readAll)).toBeUndefined()
    writeFileSync(p, 'there now')
    expect(await files.with(p, readAll)).toBe('there now')
    files.clear()
  })

  it('holds at most `max` handles, and never closes one a reader is using', async () => {
    // Handles close asynchronously: the tests before may still be closing theirs, and this one's evictions take a moment.
    await settlesTo(0)
    const files = new OpenFiles(3)
    let release!: () => void
    const held = new Promise<void>((r) => (release = r))
    const first = file('held', 'still readable')
    // A reader holds the first handle while ten other files push it out of the cache.
    const reading = files.with(first, async (h) => {
      await held
      return readAll(h)
    })
    for (let i = 0; i < 10; i++) expect(await files.with(file(`f${i}`, `file ${i}`), readAll)).toBe(`file ${i}`)
    // Three cached plus the one in use.
    await settlesTo(4)
    release()
    expect(await reading).toBe('still readable')
    files.clear()
    await settlesTo(0)
  })
})
