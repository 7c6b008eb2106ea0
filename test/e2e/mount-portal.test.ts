import { spawnSync } from 'node:child_process'
import { createHash } from 'node:crypto'
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { describe, expect, it } from 'vitest'
import { portalDiskBytes } from '../../bench/soak.js'
import { mountVolume, mustCli, mustSh, PASSPHRASE, sh, useBackend, type Backend } from '../helpers/mount.js'

const MiB = 1024 * 1024

function sha256(file: string): string {
  return createHash('sha256').update(readFileSync(file)).digest('hex')
}

/**
 * The portal's limits: its byte cap holds while a writer outruns the
 * bucket, and a full disk under it is ENOSPC for the writer — never a
 * corrupt file.
 */
/** A file:// backend whose repository and portal both sit on a 160 MiB tmpfs (needs root). */
async function tmpfsBackend(): Promise<Backend> {
  const root = mkdtempSync(path.join(tmpdir(), 's0fs-full-'))
  await mustSh(`mount -t tmpfs -o size=160m s0fs-test-full ${root}`)
  const home = path.join(root, 'home')
  mkdirSync(home)
  const env = { HOME: home, S0FS_PASSPHRASE: PASSPHRASE, XDG_RUNTIME_DIR: '' }
  const repo = `file://${path.join(root, 'repo')}`
  await mustCli(['init', '--repo', repo], env)
  const cleanup = () => {
    spawnSync('umount', ['-l', root])
    rmSync(root, { recursive: true, force: true })
  }
  return { name: 'tmpfs', env, repo, home, cleanup }
}

describe('portal cap and a full disk', () => {
  const files = useBackend()

  it('keeps the portal under --cache-size while writing more than that', async () => {
    const portal = path.join(files.backend.home, 'capped-portal')
    const m = files.track(await mountVolume(files.backend, { volume: 'capped', args: ['--cache-dir', portal, '--cache-size', '64M'] }))
    const source = path.join(files.backend.home, 'big-source')
    await mustSh(`head -c ${200 * MiB} /dev/urandom > ${source}`)
    let peak = 0
    let sampling = true
    const sampler = (async () => {
      while (sampling) {
        peak = Math.max(peak, await portalDiskBytes(portal))
        await new Promise((resolve) => setTimeout(resolve, 50))
      }
    })()
    try {
      await mustSh(`dd if=${source} of=${m.mountpoint}/big bs=1M conv=fsync status=none`, { timeoutMs: 300_000 })
    } finally {
      sampling = false
      await sampler
    }
    // Every file of the portal (logs and cached windows) together, never over the cap.
    expect(peak).toBeGreaterThan(16 * MiB)
    expect(peak).toBeLessThanOrEqual(64 * MiB)
    expect(sha256(path.join(m.mountpoint, 'big'))).toBe(sha256(source))
    await m.umount()
  }, 400_000)

  describe('on a small tmpfs holding both the repository and the portal', () => {
    const small = useBackend(tmpfsBackend)

    it('answers ENOSPC when the disk fills, and keeps every fsynced file intact', async () => {
      const root = path.dirname(small.backend.home)
      const keep = path.join(files.backend.home, 'keep-source')
      const flood = path.join(files.backend.home, 'flood-source')
      await mustSh(`head -c ${8 * MiB} /dev/urandom > ${keep} && head -c ${300 * MiB} /dev/urandom > ${flood}`)
      const m = small.track(await mountVolume(small.backend, { volume: 'full', mountpoint: path.join(root, 'mnt'), args: ['--cache-dir', path.join(root, 'portal')] }))
      await mustSh(`dd if=${keep} of=${m.mountpoint}/keep bs=1M conv=fsync status=none`)

      const r = await sh(`dd if=${flood} of=${m.mountpoint}/flood bs=1M conv=fsync status=none`, { timeoutMs: 300_000 })
      expect(r.code).not.toBe(0)
      expect(r.stderr).toMatch(/No space left on device/)
      // The daemon is still serving, and what was fsynced before is whole.
      expect(sha256(path.join(m.mountpoint, 'keep'))).toBe(sha256(keep))

      // Crash it there, give the disk room, and mount again: the log replays cleanly.
      m.kill()
      await mustSh(`mount -o remount,size=1g ${root}`)
      const again = small.track(await mountVolume(small.backend, { volume: 'full', mountpoint: m.mountpoint, args: ['--cache-dir', path.join(root, 'portal')] }))
      expect(sha256(path.join(again.mountpoint, 'keep'))).toBe(sha256(keep))
      // Whatever part of the flood survived is a true prefix of it, never other bytes.
      const floodCopy = path.join(again.mountpoint, 'flood')
      if (existsSync(floodCopy)) {
        const got = readFileSync(floodCopy)
        expect(got.equals(readFileSync(flood).subarray(0, got.length))).toBe(true)
      }
      await again.umount()
    }, 600_000)
  })
})
