import { randomBytes } from 'node:crypto'
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { BlobStore, BlobWorkerPool, NativeEncoder, segmentKey, type BlobRef } from '../../src/blob/index.js'
import { RepoKeys } from '../../src/crypto/index.js'
import { SegmentCache } from '../../src/portal/segment-cache.js'
import { MemoryStore } from '../../src/store/index.js'

const dirs: string[] = []
afterAll(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })))

/** A memory store that counts its GETs. */
class CountingStore extends MemoryStore {
  gets = 0
  override get(key: string, range?: { start: number; end?: number }): Promise<Buffer> {
    this.gets++
    return super.get(key, range)
  }
}

/** Small segments and windows, so segments span windows and windows span a segment's parts. */
async function withBlobs(
  capBytes: number,
  run: (ctx: { blobs: BlobStore; cache: SegmentCache; store: CountingStore; dir: string }) => Promise<void>,
  diskRoom?: (bytes: number) => Promise<boolean>,
): Promise<void> {
  const keys = new RepoKeys(randomBytes(32), 'test-repo')
  const store = new CountingStore(`segcache-${randomBytes(4).toString('hex')}`)
  const dir = mkdtempSync(path.join(os.tmpdir(), 's0fs-segcache-'))
  dirs.push(dir)
  const cache = new SegmentCache(store, dir, { capBytes: () => capBytes, windowBytes: 64 * 1024, diskRoom })
  const pool = new BlobWorkerPool({ master: keys.master, repoId: keys.repoId, chunking: { min: 1024, avg: 4096, max: 16384 } }, 1)
  try {
    const blobs = new BlobStore(store, keys, { pool, encoder: NativeEncoder.create(keys, false), segmentSize: 256 * 1024, source: cache })
    await run({ blobs, cache, store, dir })
  } finally {
    await pool.close()
  }
}

describe('the portal segment cache', () => {
  it('keeps segments as they are stored: reads of flushed data make no GET, and each window holds the bucket’s bytes', async () => {
    await withBlobs(1 << 30, async ({ blobs, cache, store, dir }) => {
      const files = Array.from({ length: 300 }, (_, i) => randomBytes(3000 + i * 7))
      const refs = (await blobs.putWhole(files)) as BlobRef[]
      await blobs.flush()
      store.gets = 0
      for (let i = 0; i < files.length; i++) expect((await blobs.read(refs[i])).equals(files[i])).toBe(true)
      expect(store.gets).toBe(0)
      expect(cache.stats.misses).toBe(0)
      expect(cache.stats.hits).toBeGreaterThan(files.length) // blobs that straddle two windows read from both

      // Every window is the bucket's object, byte for byte, at its offset; every segment is covered.
      const windows = readdirSync(dir, { recursive: true, withFileTypes: true }).filter((e) => e.isFile())
      const segments = new Set(refs.map((r) => r.seg))
      expect(segments.size).toBeGreaterThan(1)
      expect(windows.some((w) => w.name.endsWith('.1'))).toBe(true) // a segment spans windows
      for (const w of windows) {
        const [seg, n] = w.name.split('.')
        const at = Number(n) * cache.windowBytes
        const bucket = await store.get(segmentKey(seg), { start: at, end: at + cache.windowBytes })
        expect(readFileSync(path.join(w.parentPath, w.name)).equals(bucket)).toBe(true)
        segments.delete(seg)
      }
      expect([...segments]).toEqual([])
    })
  })

  it('writes nothing through when the cap leaves no room, and reads then come from the bucket', async () => {
    await withBlobs(0, async ({ blobs, cache, store, dir }) => {
      const files = Array.from({ length: 50 }, () => randomBytes(4096))
      const refs = (await blobs.putWhole(files)) as BlobRef[]
      await blobs.flush()
      expect(readdirSync(dir, { recursive: true })).toEqual([])
      store.gets = 0
      for (let i = 0; i < files.length; i++) expect((await blobs.read(refs[i])).equals(files[i])).toBe(true)
      expect(store.gets).toBeGreaterThan(0)
      expect(cache.stats.hits).toBe(0)
    })
  })

  it('writes nothing through when the disk has no room to spare, whatever the cap', async () => {
    const asked: number[] = []
    const noRoom = async (bytes: number) => {
      asked.push(bytes)
      return false
    }
    await withBlobs(1 << 30, async ({ blobs, dir }) => {
      const refs = (await blobs.putWhole(Array.from({ length: 50 }, () => randomBytes(4096)))) as BlobRef[]
      await blobs.flush()
      expect(refs.length).toBe(50)
      expect(readdirSync(dir, { recursive: true })).toEqual([])
      expect(asked.length).toBeGreaterThan(0)
    }, noRoom)
  })

  it('shrinks by evicting the least recently used windows, whatever the cap', async () => {
    await withBlobs(1 << 30, async ({ blobs, cache, dir }) => {
      await blobs.putWhole(Array.from({ length: 200 }, () => randomBytes(4096)))
      await blobs.flush()
      await cache.enforceCap() // counts what is on disk
      const before = cache.bytes
      expect(before).toBeGreaterThan(3 * cache.windowBytes)
      const freed = await cache.shrink(2 * cache.windowBytes)
      expect(freed).toBeGreaterThanOrEqual(2 * cache.windowBytes)
      expect(cache.bytes).toBe(before - freed)
      const left = readdirSync(dir, { recursive: true, withFileTypes: true }).filter((e) => e.isFile())
      expect(left.reduce((n, e) => n + readFileSync(path.join(e.parentPath, e.name)).length, 0)).toBe(before - freed)
      expect(await cache.shrink(Infinity)).toBe(before - freed)
      expect(cache.bytes).toBe(0)
    })
  })
})
