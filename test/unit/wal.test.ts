import { execFileSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { rmSync, writeFileSync } from 'node:fs'
import path from 'node:path'
import { describe, expect, it } from 'vitest'
import { RepoKeys } from '../../src/crypto/index.js'
import { Wal } from '../../src/portal/index.js'
import { tempDir } from '../helpers/stores.js'

/** A fresh log in a temporary directory for `body`, closed and removed afterwards. */
async function withWal(body: (wal: Wal) => Promise<void>): Promise<void> {
  const keys = new RepoKeys(randomBytes(32), 'test-repo')
  const tmp = tempDir('s0fs-wal-')
  const wal = await Wal.create(tmp.dir, keys, { volumeId: 'v', session: 's', baseGeneration: 0 })
  try {
    await body(wal)
  } finally {
    await wal.close()
    tmp.cleanup()
  }
}

describe('write-ahead log read-back', () => {
  it('reads a written-data record back by decrypting only that record, whatever shared its turn', async () => {
    await withWal(async (wal) => {
      // 8 MiB of 4 KiB records (more than the in-memory read-back cache holds), each next to a metadata record.
      const payloads = Array.from({ length: 2048 }, () => randomBytes(4096))
      const locs = payloads.map((p) => {
        wal.append(2, randomBytes(100))
        return wal.append(1, Buffer.from(p), true) // the log frees what it is given
      })
      await wal.sync()
      const before = { ...wal.stats }
      const got = await Promise.all(locs.slice(0, 10).map((loc) => wal.read(loc)))
      got.forEach((g, i) => expect(g.equals(payloads[i])).toBe(true))
      expect(wal.stats.framesRead - before.framesRead).toBe(10)
      // Each read decrypted one record: its 4 KiB, its header and the seal, nothing of its neighbours.
      expect(wal.stats.frameBytesRead - before.frameBytesRead).toBeLessThan(10 * (4096 + 100))
      // Every record reads back byte for byte, from memory or disk.
      for (const i of [0, 500, 1500, 2047]) expect((await wal.read(locs[i])).equals(payloads[i])).toBe(true)

      // Many at once, in any order asked: frames next to each other on disk share a pread.
      const order = payloads.map((_, i) => i).sort((a, b) => ((a * 7919) % 2048) - ((b * 7919) % 2048))
      const preads = wal.stats.preads
      const seen = new Array<boolean>(payloads.length).fill(false)
      await wal.readEach(
        order.map((i) => locs[i]),
        (k, payload) => {
          expect(payload.equals(payloads[order[k]])).toBe(true)
          seen[k] = true
        },
      )
      expect(seen.every(Boolean)).toBe(true)
      // ~8.6 MiB of log (records and the metadata between them) in reads of at most 1 MiB.
      expect(wal.stats.preads - preads).toBeLessThan(20)
    })
  })

  it('frees a read-back payload once it is written and out of the read-back cache, and reads it back from disk', async () => {
    await withWal(async (wal) => {
      // 8 MiB of 4 KiB records: twice what the read-back cache holds.
      const originals = Array.from({ length: 2048 }, () => randomBytes(4096))
      const given = originals.map((p) => Buffer.from(p))
      const locs = [wal.append(1, given[0], true)]
      expect(given[0].length).toBe(4096) // not written yet: still held
      for (const p of given.slice(1)) locs.push(wal.append(1, p, true))
      await wal.sync()
      // The oldest left the cache and were written: freed. The newest are still cached.
      expect(given.slice(0, 100).every((p) => p.length === 0)).toBe(true)
      expect(given.slice(-100).every((p) => p.length === 4096)).toBe(true)
      for (const i of [0, 1000, 2047]) expect((await wal.read(locs[i])).equals(originals[i])).toBe(true)
    })
  })

  it('reads back records larger than its reused buffers, and a batch of them, after they left the read-back cache', async () => {
    await withWal(async (wal) => {
      // A 1 MiB WRITE's frame fits the reused read buffer; 1.5 and 3 MiB ones get buffers of their own, freed once visited.
      const sizes = [1024 * 1024, 1536 * 1024, 3 * 1024 * 1024, 1024 * 1024 + 100]
      const originals = sizes.map((n) => randomBytes(n))
      const locs = originals.map((p) => wal.append(1, Buffer.from(p), true))
      // 8 MiB more pushes them out of the read-back cache, in a batch larger than the write buffer.
      for (let i = 0; i < 8; i++) wal.append(1, randomBytes(1024 * 1024), true)
      await wal.sync()
      const seen = new Map<number, Buffer>()
      await wal.readEach(locs, (i, payload) => seen.set(i, Buffer.from(payload)))
      expect(originals.every((p, i) => seen.get(i)?.equals(p))).toBe(true)
      // Twice: nothing the first pass freed is read again.
      for (const [i, loc] of locs.entries()) expect((await wal.read(loc)).equals(originals[i])).toBe(true)
    })
  })

  it('writes on the thread pool, one batch at a time; records read back while queued or being written; writers wait for room', async () => {
    await withWal(async (wal) => {
      const frames = () => wal.stats.frames
      const start = frames()
      const first = randomBytes(1024 * 1024)
      const loc = wal.append(1, Buffer.from(first), true)
      expect(frames()).toBe(start) // queued, not written yet...
      expect((await wal.read(loc)).equals(first)).toBe(true) // ...yet readable
      await wal.sync()
      expect(frames()).toBe(start + 1)
      // 16 MiB in one turn: the eighth MiB starts a write of the first two, and the rest queue behind it.
      const payloads = Array.from({ length: 16 }, () => randomBytes(1024 * 1024))
      const locs = payloads.map((p) => wal.append(1, Buffer.from(p), true))
      expect(frames()).toBe(start + 1)
      const wait = wal.room()
      expect(wait).toBeInstanceOf(Promise) // 16 MiB unwritten: a writer waits (from 8)
      // Being written (most are out of the read-back cache by now) or queued, every record reads back.
      for (const [i, l] of locs.entries()) expect((await wal.read(l)).equals(payloads[i])).toBe(true)
      await wait
      expect(frames()).toBeGreaterThan(start + 1) // room came when a write was done
      await wal.sync()
      expect(frames()).toBe(start + 17)
      expect(wal.room()).toBeUndefined()
      for (const i of [0, 7, 8, 15]) expect((await wal.read(locs[i])).equals(payloads[i])).toBe(true)
    })
  })

  it('keeps records in memory while the disk is full, says so at sync, and writes them once there is room', async () => {
    // A 2 MiB tmpfs (needs root, as the FUSE tests do), nearly filled before the log starts.
    const tmp = tempDir('s0fs-wal-full-')
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=2m', 's0fs-test-wal', tmp.dir])
    const keys = new RepoKeys(randomBytes(32), 'test-repo')
    try {
      const filler = path.join(tmp.dir, 'filler')
      writeFileSync(filler, Buffer.alloc(1536 * 1024))
      const wal = await Wal.create(path.join(tmp.dir, 'log'), keys, { volumeId: 'v', session: 's', baseGeneration: 0 })
      const payloads = Array.from({ length: 8 }, () => randomBytes(128 * 1024))
      const locs = payloads.map((p) => wal.append(1, Buffer.from(p), true))
      const error = await wal.sync().then(() => undefined, (err: NodeJS.ErrnoException) => err)
      expect(error?.code).toBe('ENOSPC')
      expect(wal.stalled).toBe(true)
      // Acknowledged records stay readable meanwhile, and more may be appended.
      for (const [i, loc] of locs.entries()) expect((await wal.read(loc)).equals(payloads[i])).toBe(true)
      const more = randomBytes(100)
      wal.append(2, Buffer.from(more))
      rmSync(filler)
      await wal.sync()
      expect(wal.stalled).toBe(false)
      await wal.close()
      const recovered = await Wal.recover(path.join(tmp.dir, 'log'), keys, 'v')
      expect(recovered!.records.map((r) => r.seq)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9])
      recovered!.records.slice(0, 8).forEach((r, i) => expect(r.payload.equals(payloads[i])).toBe(true))
      expect(recovered!.records[8].payload.equals(more)).toBe(true)
      expect(recovered!.tornBytes).toBe(0)
    } finally {
      execFileSync('umount', ['-l', tmp.dir])
      tmp.cleanup()
    }
  })

  it('recovers interleaved metadata and data records of every size in the order they were appended', async () => {
    const keys = new RepoKeys(randomBytes(32), 'test-repo')
    const tmp = tempDir('s0fs-wal-')
    const wal = await Wal.create(tmp.dir, keys, { volumeId: 'v', session: 's', baseGeneration: 0 })
    const appended: Array<{ kind: number; payload: Buffer }> = []
    // Batches are sealed into one reused buffer up to 2 MiB, and into one of their own beyond: both, and in turns.
    const large = new Map([[100, 1536 * 1024], [101, 1536 * 1024], [150, 1200 * 1024]])
    for (let i = 0; i < 300; i++) {
      const data = i % 3 !== 2
      const payload = randomBytes(large.get(i) ?? (data ? 4096 : 50))
      wal.append(data ? 1 : 2, payload, data)
      appended.push({ kind: data ? 1 : 2, payload })
      // Some turns end between records: frames of several kinds and sizes.
      if (i % 7 === 0) await new Promise((resolve) => setTimeout(resolve, 5))
    }
    await wal.close()
    try {
      const recovered = await Wal.recover(tmp.dir, keys, 'v')
      expect(recovered!.records.map((r) => r.seq)).toEqual(appended.map((_, i) => i + 1))
      recovered!.records.forEach((r, i) => {
        expect(r.kind).toBe(appended[i].kind)
        expect(r.payload.equals(appended[i].payload)).toBe(true)
      })
      expect(recovered!.tornBytes).toBe(0)
    } finally {
      tmp.cleanup()
    }
  })

  it('finishes syncs that were waiting on a file when a rotation closes it, and syncs that file before later ones return', async () => {
    await withWal(async (wal) => {
      // A commit rotates the log while writers' fsyncs queue up behind one another (a load soak hit EBADF here).
      for (let i = 0; i < 30; i++) {
        wal.append(1, randomBytes(100), true)
        const first = wal.sync()
        wal.append(1, randomBytes(100), true)
        const second = wal.sync()
        wal.rotate()
        wal.append(1, randomBytes(100), true)
        const third = wal.sync()
        await Promise.all([first, second, third])
      }
      expect(wal.stats.syncs).toBe(90)
    })
  })
})
