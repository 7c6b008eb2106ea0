import { mkdirSync, writeFileSync } from 'node:fs'
import path from 'node:path'
import { describe, expect, it } from 'vitest'
import { ReadTracker } from '../../src/fs/read-tracker.js'
import { PortalAdmission } from '../../src/mount/admission.js'
import { Portal } from '../../src/portal/index.js'
import { MemoryStore } from '../../src/store/index.js'
import { tempDir } from '../helpers/stores.js'

const MiB = 1024 * 1024
const tick = () => new Promise((resolve) => setTimeout(resolve, 1))

/** A portal in `dir` whose cache already holds 24 MiB: six cached windows of 4 MiB. */
async function portalWithCache(dir: string, options: { capBytes: number; reserveBytes: number }): Promise<Portal> {
  const portal = new Portal(dir, new MemoryStore(`admission-${path.basename(dir)}`), options)
  await portal.init()
  for (let i = 0; i < 6; i++) {
    const sub = path.join(dir, 'cache', `0${i}`)
    mkdirSync(sub, { recursive: true })
    writeFileSync(path.join(sub, `0${i}segment.0`), Buffer.alloc(4 * MiB))
  }
  await portal.cache.enforceCap()
  return portal
}

describe('portal admission', () => {
  it('keeps concurrent writers, the log and the cache together under the cap', async () => {
    const tmp = tempDir('s0fs-admission-')
    try {
      const cap = 64 * MiB
      // 24 MiB of cached windows that must make way for the log.
      const portal = await portalWithCache(tmp.dir, { capBytes: cap, reserveBytes: 0 })
      expect(portal.cache.bytes).toBe(24 * MiB)

      let log = 0
      let committing: Promise<void> | undefined
      let commits = 0
      let peak = 0
      const commit = (): Promise<void> =>
        (committing ??= (async () => {
          const through = log
          for (let i = 0; i < 5; i++) await tick()
          log -= through
          commits++
        })().finally(() => (committing = undefined)))
      const admission = new PortalAdmission(portal, {
        volumeId: 'v',
        logBytes: () => log,
        hasUncommitted: () => log > 0,
        commit: () => commit(),
        commitSoon: () => void commit(),
      })
      portal.ownLogBytes = () => admission.ownLogBytes

      const writer = async () => {
        for (let i = 0; i < 40; i++) {
          const release = await admission.admit(MiB)
          await tick()
          log += MiB + 90
          release()
          peak = Math.max(peak, log + portal.cache.bytes)
        }
      }
      await Promise.all(Array.from({ length: 8 }, writer))
      // 320 MiB went through a 64 MiB portal: commits made room, the cache gave way, and the cap held.
      expect(commits).toBeGreaterThan(3)
      expect(portal.cache.bytes).toBeLessThan(24 * MiB)
      expect(peak).toBeGreaterThan(cap / 2)
      expect(peak).toBeLessThanOrEqual(cap)
    } finally {
      tmp.cleanup()
    }
  })
})

describe('portal admission on a full disk', () => {
  it('evicts clean cache to make room before answering ENOSPC, and answers it once nothing is left to free', async () => {
    const tmp = tempDir('s0fs-admission-disk-')
    try {
      const reserve = 64 * MiB
      const portal = await portalWithCache(tmp.dir, { capBytes: 1024 * MiB, reserveBytes: reserve })
      // A disk of reserve + 16 MiB: the 24 MiB of cache leave less than the reserve free.
      const disk = reserve + 16 * MiB
      portal.freeBytes = async () => disk - portal.cache.bytes
      const admission = new PortalAdmission(portal, {
        volumeId: 'v',
        logBytes: () => 0,
        hasUncommitted: () => false,
        commit: async () => undefined,
        commitSoon: () => undefined,
      })
      // Nothing to commit, so without eviction this would be ENOSPC.
      const release = await admission.admit(MiB)
      release()
      expect(portal.cache.bytes).toBeLessThanOrEqual(8 * MiB)
      expect(portal.cache.stats.evictedBytes).toBeGreaterThanOrEqual(16 * MiB)

      // With the cache gone and the disk still short, the writer is told (9 MiB: past the bytes between disk checks).
      portal.freeBytes = async () => reserve
      await expect(Promise.resolve(admission.admit(9 * MiB))).rejects.toMatchObject({ code: 'ENOSPC', message: expect.stringContaining(tmp.dir) })
      expect(portal.cache.bytes).toBe(0)
    } finally {
      tmp.cleanup()
    }
  })
})

describe('read tracker', () => {
  it('waits only for the reads that began before it was asked', async () => {
    const reads = new ReadTracker()
    const early = reads.begin()
    let drained = false
    const waiting = reads.drained().then(() => (drained = true))
    const late = reads.begin()
    await tick()
    expect(drained).toBe(false)
    reads.end(early)
    await waiting
    expect(drained).toBe(true)
    // The later read is still in flight, and did not hold the earlier wait up.
    expect(reads.inFlight).toBe(1)
    reads.end(late)
    expect(reads.inFlight).toBe(0)
    await reads.drained()
  })
})
