import { randomBytes } from 'node:crypto'
import { readdirSync, readFileSync } from 'node:fs'
import path from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import {
  blobAad,
  BlobCorruptError,
  BlobReadError,
  BlobStore,
  BlobWorkerPool,
  NativeEncoder,
  createChunker,
  decodeBlob,
  encodeBlob,
  FRAME_BYTES,
  gearTable,
  openBlob,
  verifySegment,
  type BlobRef,
} from '../../src/blob/index.js'
import { BlobIndex } from '../../src/blob/blob-index.js'
import { Arenas } from '../../src/blob/arenas.js'
import { freeBuffer } from '../../src/util/native.js'
import type { EncodedChunk } from '../../src/blob/index.js'
import { RepoKeys, SEAL_OVERHEAD } from '../../src/crypto/index.js'
import { listAll, MemoryStore, type ObjectStore } from '../../src/store/index.js'

const chunking = { min: 256 * 1024, avg: 1024 * 1024, max: 4 * 1024 * 1024 }

function setup() {
  const keys = new RepoKeys(randomBytes(32), 'test-repo')
  const pool = new BlobWorkerPool({ master: keys.master, repoId: keys.repoId, chunking }, 2)
  const name = `blob-${randomBytes(4).toString('hex')}`
  const store = new MemoryStore(name)
  return { keys, pool, store, blobs: new BlobStore(store, keys, { pool }) }
}

/** Text files to store: Node's type declarations (real source text). */
function corpus(maxBytes: number): { name: string; data: Buffer }[] {
  const dir = path.join(import.meta.dirname, '../../node_modules/@types/node')
  const files: { name: string; data: Buffer }[] = []
  let total = 0
  for (const name of readdirSync(dir).filter((n) => n.endsWith('.d.ts')).sort()) {
    if (total > maxBytes) break
    const data = readFileSync(path.join(dir, name))
    if (data.length < 64) continue
    files.push({ name, data })
    total += data.length
  }
  return files
}

describe('content-defined chunking', () => {
  it('native and JavaScript chunkers cut at exactly the same places, the native one on the thread pool too', async () => {
    // The addon is built by `npm install`; CI has a compiler, so it must be there.
    const gear = gearTable(randomBytes(32))
    const native = createChunker(chunking, gear)
    expect(native.native).toBe(process.env.S0FS_NATIVE !== '0')
    expect(native.cutsAsync !== undefined).toBe(native.native)
    const js = createChunker(chunking, gear, 'js')
    for (const data of [randomBytes(9 * 1024 * 1024), Buffer.alloc(5 * 1024 * 1024), Buffer.from('abc'), Buffer.alloc(0), Buffer.from(readFileSync(path.join(import.meta.dirname, '../../package-lock.json')))]) {
      const expected = js.cuts(data)
      expect(native.cuts(data)).toEqual(expected)
      if (native.cutsAsync) expect(await native.cutsAsync(data)).toEqual(expected)
    }
  })

  it('cuts within bounds and finds the same boundaries after an insertion', () => {
    const chunker = createChunker(chunking, gearTable(randomBytes(32)))
    const data = randomBytes(16 * 1024 * 1024)
    const cuts = chunker.cuts(data)
    const sizes = cuts.map((c, i) => c - (i ? cuts[i - 1] : 0))
    expect(cuts[cuts.length - 1]).toBe(data.length)
    for (const s of sizes.slice(0, -1)) {
      expect(s).toBeGreaterThanOrEqual(chunking.min)
      expect(s).toBeLessThanOrEqual(chunking.max)
    }
    const shifted = Buffer.concat([randomBytes(1000), data])
    const shiftedCuts = new Set(chunker.cuts(shifted).map((c) => c - 1000))
    const shared = cuts.filter((c) => shiftedCuts.has(c)).length
    expect(shared).toBeGreaterThanOrEqual(cuts.length - 2)
  })
})

describe('blob encoding', () => {
  const text = () => Buffer.concat(corpus(6 * 1024 * 1024).map((f) => f.data))
  const encodingOf = (keys: RepoKeys, e: { id: Buffer; sealed: Buffer }) => keys.open('data', e.sealed, blobAad(e.id))[0]

  for (const frames of [false, true]) {
    it(`round-trips compressible and incompressible blobs of every size, on the workers, natively and on this thread (frames ${frames ? 'on' : 'off'})`, async () => {
      const keys = new RepoKeys(randomBytes(32), 'test-repo')
      const pool = new BlobWorkerPool({ master: keys.master, repoId: keys.repoId, chunking, frames }, 2)
      try {
        const source = text()
        // Sizes cross the compression threshold (64 B), a frame (128 KiB) and reach the largest chunk (4 MiB).
        const sizes = [1, 63, 64, 4096, FRAME_BYTES, FRAME_BYTES + 1, 1024 * 1024, 4 * 1024 * 1024, 10_000]
        // Random bytes that are all zero (randomBytes(1) is, one time in 256) encode natively as a hole, not a blob.
        const random = (n: number) => {
          const b = randomBytes(n)
          b[0] |= 1
          return b
        }
        const inputs = sizes.flatMap((n) => [source.subarray(0, n), random(n)])
        const sab = new SharedArrayBuffer(inputs.reduce((n, b) => n + b.length, 0))
        const ranges: [number, number][] = []
        let at = 0
        for (const b of inputs) {
          Buffer.from(sab).set(b, at)
          ranges.push([at, at + b.length])
          at += b.length
        }
        const onWorkers = await pool.encode(sab, 0, at, ranges)
        const native = NativeEncoder.create(keys, frames)
        expect(native, 'the native addon is built (npm install) and has its encoder').toBeDefined()
        // Two batches at once, as the blob store sends them: they must not share a nonce.
        const half = ranges.length / 2
        const natively = (await Promise.all([native!.encode(sab, 0, ranges[half][0], ranges.slice(0, half)), native!.encode(sab, ranges[half][0], at, ranges.slice(half))])).flat()
        const here = inputs.map((b) => encodeBlob(keys, b, { frames }))
        const zeros = new SharedArrayBuffer(FRAME_BYTES)
        expect(await native!.encode(zeros, 0, FRAME_BYTES, [[0, 100], [100, FRAME_BYTES]])).toEqual([
          { id: Buffer.alloc(0), sealed: Buffer.alloc(0), rawLength: 100, zero: true },
          { id: Buffer.alloc(0), sealed: Buffer.alloc(0), rawLength: FRAME_BYTES - 100, zero: true },
        ])
        const nonces = new Set([...natively, ...here].map((e) => e.sealed.subarray(0, 29).toString('hex')))
        expect(nonces.size).toBe(natively.length + here.length)
        for (let i = 0; i < inputs.length; i++) {
          expect(natively[i].id.equals(here[i].id)).toBe(true)
          expect(natively[i].rawLength).toBe(inputs[i].length)
          for (const e of [onWorkers[i], natively[i], here[i]]) {
            expect(decodeBlob(keys, e.id, e.sealed, inputs[i].length).equals(inputs[i])).toBe(true)
            // 0 raw, 1 one zstd frame, 2 zstd frames: frames only above one frame's size, and only when asked for.
            // (Text shorter than 4 KiB may not save the 3% compression must save.)
            if (i % 2 === 1) expect(encodingOf(keys, e)).toBe(0)
            else if (inputs[i].length >= 4096) expect(encodingOf(keys, e)).toBe(frames && inputs[i].length > FRAME_BYTES ? 2 : 1)
          }
          expect(onWorkers[i].id.equals(here[i].id)).toBe(true)
          if (i % 2 === 0 && inputs[i].length >= 4096) expect(here[i].sealed.length).toBeLessThan(inputs[i].length * 0.6)
          if (i % 2 === 1) expect(here[i].sealed.length).toBeLessThanOrEqual(inputs[i].length + 1 + SEAL_OVERHEAD)
        }
      } finally {
        await pool.close()
      }
    }, 60_000)
  }

  it('reads any range of a framed blob, across frame edges, the same as the whole', () => {
    const keys = new RepoKeys(randomBytes(32), 'test-repo')
    const data = text().subarray(0, 1024 * 1024 + 777)
    const e = encodeBlob(keys, data, { frames: true })
    expect(encodingOf(keys, e)).toBe(2)
    const blob = openBlob(keys, e.id, e.sealed, data.length)
    // Held: the compressed frames and one decompressed frame, far less than the plaintext.
    expect(blob.heldBytes).toBeLessThan(data.length / 2)
    const cuts = [0, 1, 4095, FRAME_BYTES - 1, FRAME_BYTES, FRAME_BYTES + 1, 3 * FRAME_BYTES + 5, data.length - 1, data.length]
    for (const from of cuts) for (const to of cuts) if (to >= from) expect(blob.slice(from, to).equals(data.subarray(from, to))).toBe(true)
    for (let i = 0; i < 200; i++) {
      const from = Math.floor(Math.random() * data.length)
      const to = Math.min(data.length, from + Math.floor(Math.random() * 300_000))
      expect(blob.slice(from, to).equals(data.subarray(from, to))).toBe(true)
    }
  })

  it('copies any range of a blob into a buffer, framed or not, writing nothing outside the range', () => {
    const keys = new RepoKeys(randomBytes(32), 'test-repo')
    const data = text().subarray(0, 3 * FRAME_BYTES + 777)
    for (const frames of [true, false]) {
      const e = encodeBlob(keys, data, { frames })
      const blob = openBlob(keys, e.id, e.sealed, data.length)
      const cuts = [0, 1, FRAME_BYTES - 1, FRAME_BYTES, FRAME_BYTES + 1, 2 * FRAME_BYTES, 3 * FRAME_BYTES + 5, data.length]
      for (const from of cuts) {
        for (const to of cuts) {
          if (to < from) continue
          // Touch a frame first, as a reader in small steps does: that frame is copied, the others decompressed in place.
          if (frames) blob.slice(from, from + 1)
          const into = Buffer.alloc(to - from + 20, 0xaa)
          blob.copyInto(from, to, into, 10)
          expect(into.subarray(10, 10 + to - from).equals(data.subarray(from, to))).toBe(true)
          expect(into.subarray(0, 10).every((b) => b === 0xaa) && into.subarray(10 + to - from).every((b) => b === 0xaa)).toBe(true)
        }
      }
    }
  })

  it('a read that will not come back takes partly covered frames through one shared scratch buffer, leaving earlier slices intact', () => {
    const keys = new RepoKeys(randomBytes(32), 'test-repo')
    const one = text().subarray(0, 3 * FRAME_BYTES + 777)
    const two = Buffer.from(one).reverse()
    const blobs = [one, two].map((data) => {
      const e = encodeBlob(keys, data, { frames: true })
      return { data, blob: openBlob(keys, e.id, e.sealed, data.length) }
    })
    const kept = blobs[0].blob.slice(FRAME_BYTES + 3, FRAME_BYTES + 4000)
    const cuts = [1, FRAME_BYTES - 1, FRAME_BYTES + 1, 2 * FRAME_BYTES + 9, 3 * FRAME_BYTES + 5]
    for (const from of cuts) {
      for (const to of cuts) {
        if (to <= from) continue
        // Alternate the blobs: each copy's edge frames go through the scratch buffer the other used last.
        for (const { data, blob } of blobs) {
          const into = Buffer.alloc(to - from + 20, 0xaa)
          blob.copyInto(from, to, into, 10, false)
          expect(into.subarray(10, 10 + to - from).equals(data.subarray(from, to))).toBe(true)
          expect(into.subarray(0, 10).every((b) => b === 0xaa) && into.subarray(10 + to - from).every((b) => b === 0xaa)).toBe(true)
        }
      }
    }
    expect(kept.equals(one.subarray(FRAME_BYTES + 3, FRAME_BYTES + 4000))).toBe(true)
  })

  it('a frame decompressed in place that is not the size its header says is reported damaged', () => {
    const keys = new RepoKeys(randomBytes(32), 'test-repo')
    const data = text().subarray(0, 2 * FRAME_BYTES + 100)
    const id = keys.contentId(data)
    const body = keys.open('data', encodeBlob(keys, data, { frames: true }).sealed, blobAad(id))
    body.writeUInt32LE(data.length - 50, 1) // same frame count, the last frame 50 bytes shorter than stored
    const blob = openBlob(keys, id, keys.seal('data', body, blobAad(id)))
    expect(() => blob.copyInto(0, data.length - 50, Buffer.alloc(data.length), 0)).toThrow(BlobCorruptError)
    expect(() => blob.slice(2 * FRAME_BYTES, data.length - 50)).toThrow(BlobCorruptError)
  })

  it('a framed blob whose header disagrees with its frames is reported damaged, never read', () => {
    const keys = new RepoKeys(randomBytes(32), 'test-repo')
    const data = text().subarray(0, 300_000)
    const id = keys.contentId(data)
    const good = keys.open('data', encodeBlob(keys, data, { frames: true }).sealed, blobAad(id))
    const reseal = (body: Buffer) => keys.seal('data', body, blobAad(id))
    const lying = Buffer.from(good)
    lying.writeUInt32LE(data.length + FRAME_BYTES, 1) // one frame more than stored
    expect(() => decodeBlob(keys, id, reseal(lying))).toThrow(BlobCorruptError)
    const swapped = Buffer.from(good)
    swapped.writeUInt32LE(swapped.readUInt32LE(9) + 1, 9) // the first frame's size
    expect(() => decodeBlob(keys, id, reseal(swapped))).toThrow(/framed payload/)
  })
})

describe('blob store', () => {
  let env: ReturnType<typeof setup>
  beforeAll(() => {
    env = setup()
  })
  afterAll(async () => {
    await env.pool.close()
  })

  it('stores the same 100 MiB twice but uploads it once', async () => {
    const { blobs, store } = env
    const data = randomBytes(100 * 1024 * 1024)
    const first = await blobs.putChunked(data)
    await blobs.flush()
    const afterFirst = { ...store.counters }
    const second = await blobs.putChunked(data)
    await blobs.flush()
    expect(store.counters.put).toBe(afterFirst.put)
    expect(store.counters.bytesOut).toBe(afterFirst.bytesOut)
    expect(second.chunks.map((c) => c.ref!.id.toString('hex'))).toEqual(first.chunks.map((c) => c.ref!.id.toString('hex')))
    expect(afterFirst.bytesOut).toBeLessThan(data.length * 1.01)
    // Read back through the store, chunk by chunk.
    const parts = await Promise.all(first.chunks.map((c) => blobs.read(c.ref!)))
    expect(Buffer.concat(parts).equals(data)).toBe(true)
  }, 120_000)

  it('stores 1,000 files of 4 KiB in at most 5 PUTs', async () => {
    const { blobs, store } = env
    const before = store.counters.put
    const files = Array.from({ length: 1000 }, () => randomBytes(4096))
    const refs = (await blobs.putWhole(files)) as BlobRef[]
    await blobs.flush()
    expect(store.counters.put - before).toBeLessThanOrEqual(5)
    for (const i of [0, 500, 999]) expect((await blobs.read(refs[i])).equals(files[i])).toBe(true)
  })

  it('keeps chunks of a stream content-defined across calls with a carried tail', async () => {
    const { blobs } = env
    const data = randomBytes(12 * 1024 * 1024)
    const whole = await blobs.putChunked(data)
    // The same bytes fed in 3 MiB pieces, carrying the unconsumed tail each time.
    const ids: string[] = []
    let carry = Buffer.alloc(0)
    for (let at = 0; at < data.length; at += 3 * 1024 * 1024) {
      const piece = Buffer.concat([carry, data.subarray(at, at + 3 * 1024 * 1024)])
      const final = at + 3 * 1024 * 1024 >= data.length
      const out = await blobs.putChunked(piece, final)
      ids.push(...out.chunks.map((c) => c.ref!.id.toString('hex')))
      carry = piece.subarray(out.consumed)
    }
    expect(ids).toEqual(whole.chunks.map((c) => c.ref!.id.toString('hex')))
  })

  it('rebuilds a lost index from the segments alone', async () => {
    const { keys, store, pool } = env
    const data = [randomBytes(10_000), randomBytes(20_000)]
    const writer = new BlobStore(store, keys, { pool })
    const refs = (await writer.putWhole(data)) as BlobRef[]
    await writer.flush()
    const indexes = (await store.listPage('index/')).objects.map((o) => o.key)
    await store.deleteMany(indexes.slice(0, -1).concat(indexes.slice(-1)))
    const fresh = new BlobStore(store, keys, { pool })
    await fresh.loadIndex()
    expect(fresh.lookup(refs[0].id)).toBeUndefined()
    const rebuilt = await fresh.rebuildIndex()
    expect(rebuilt.segments).toBeGreaterThan(0)
    expect(fresh.lookup(refs[1].id)).toEqual(refs[1])
    expect((await store.listPage('index/')).objects).toHaveLength(1)
    const again = new BlobStore(store, keys, { pool })
    await again.loadIndex()
    expect(again.lookup(refs[0].id)).toEqual(refs[0])
  })

  it('finds known blobs again after reloading the index from the bucket', async () => {
    const { keys, store, pool } = env
    const data = randomBytes(300_000)
    const writer = new BlobStore(store, keys, { pool })
    const [ref] = (await writer.putWhole([data])) as BlobRef[]
    await writer.flush()
    const reader = new BlobStore(store, keys, { pool })
    await reader.loadIndex()
    expect(reader.lookup(ref.id)).toEqual(ref)
    expect((await reader.read(ref)).equals(data)).toBe(true)
  })
})

describe('freeing the encoder\'s buffers', () => {
  it('puts a native batch\'s sealed blobs in one buffer, which freeing empties', async () => {
    const keys = new RepoKeys(randomBytes(32), 'test-repo')
    const native = NativeEncoder.create(keys, false)!
    expect(native, 'the native addon is built (npm install) and has its encoder').toBeDefined()
    const sab = new SharedArrayBuffer(3 * 4096)
    Buffer.from(sab).set(randomBytes(3 * 4096))
    const out = await native.encode(sab, 0, 3 * 4096, [[0, 4096], [4096, 8192], [8192, 12288]])
    const arena = out[0].arena!
    expect(out.every((e) => e.arena === arena && e.sealed.buffer === arena.buffer)).toBe(true)
    const input = Buffer.from(sab)
    out.forEach((e, i) => expect(decodeBlob(keys, e.id, e.sealed, 4096).equals(input.subarray(i * 4096, (i + 1) * 4096))).toBe(true))
    freeBuffer(arena)
    expect(arena.length).toBe(0)
    expect(out.map((e) => e.sealed.length)).toEqual([0, 0, 0])
    // IDs live in a buffer of their own, which freeing the blobs leaves alone.
    expect(out.map((e) => e.id.length)).toEqual([32, 32, 32])
  })

  it('Arenas frees a buffer when the last segment holding it is stored, or at once when none holds it', () => {
    const freed: string[] = []
    const names = new Map<Buffer, string>()
    const arena = (name: string) => {
      const b = Buffer.alloc(1)
      names.set(b, name)
      return b
    }
    const arenas = new Arenas((b) => freed.push(names.get(b)!))
    const [a, b, c] = [arena('a'), arena('b'), arena('c')]
    arenas.hold('seg1', a)
    arenas.hold('seg1', a)
    arenas.hold('seg2', a) // a batch split over two segments
    arenas.hold('seg2', b)
    arenas.releaseUnheld([a, b, c]) // c: every blob of it was a duplicate
    expect(freed).toEqual(['c'])
    arenas.stored('seg1')
    expect(freed).toEqual(['c'])
    arenas.stored('seg2')
    expect(freed.sort()).toEqual(['a', 'b', 'c'])
    expect(arenas.size).toBe(0)
  })

  it('a blob store frees each batch once its segments are stored, and every blob reads back before and after', async () => {
    const keys = new RepoKeys(randomBytes(32), 'test-repo')
    const native = NativeEncoder.create(keys, false)!
    expect(native).toBeDefined()
    const seen: EncodedChunk[] = []
    const encoder = {
      encode: async (sab: SharedArrayBuffer, start: number, end: number, ranges: [number, number][]) => {
        const out = await native.encode(sab, start, end, ranges)
        seen.push(...out)
        return out
      },
    }
    const pool = new BlobWorkerPool({ master: keys.master, repoId: keys.repoId, chunking }, 1)
    try {
      // Small segments, so batches straddle segments and segments upload while others fill.
      const blobs = new BlobStore(new MemoryStore(`arenas-${randomBytes(4).toString('hex')}`), keys, { pool, encoder, segmentSize: 256 * 1024 })
      const files = Array.from({ length: 600 }, () => randomBytes(4096))
      const refs = (await blobs.putWhole(files)) as BlobRef[]
      const arenas = new Set(seen.map((e) => e.arena!))
      expect(arenas.size).toBeGreaterThan(1)
      // Still in memory (the last segment is open): read from there.
      for (const i of [0, 299, 599]) expect((await blobs.read(refs[i])).equals(files[i])).toBe(true)
      await blobs.flush()
      expect([...arenas].map((a) => a.length)).toEqual([...arenas].map(() => 0))
      // The same files again: every blob is a duplicate, so their batches' buffers go at once.
      seen.length = 0
      await blobs.putWhole(files)
      expect(seen.length).toBe(600)
      expect(seen.every((e) => e.sealed.length === 0)).toBe(true)
      for (const i of [0, 299, 599]) expect((await blobs.read(refs[i])).equals(files[i])).toBe(true)
    } finally {
      await pool.close()
    }
  })
})

describe('work buffers with the native encoder and chunker', () => {
  it('are ordinary memory freed once encoded, and streams and batches read back', async () => {
    const keys = new RepoKeys(randomBytes(32), 'test-repo')
    const chunker = createChunker(chunking, gearTable(keys.key('chunker')))
    expect(chunker.native, 'the native addon is built (npm install)').toBe(true)
    const pool = new BlobWorkerPool({ master: keys.master, repoId: keys.repoId, chunking }, 1)
    try {
      const blobs = new BlobStore(new MemoryStore(`work-${randomBytes(4).toString('hex')}`), keys, {
        pool,
        encoder: NativeEncoder.create(keys, false),
        localChunker: chunker,
        segmentSize: 1024 * 1024,
      })
      const probe = blobs.workBuffer(4096)
      expect(probe instanceof SharedArrayBuffer).toBe(false)
      blobs.doneWith(probe)
      expect(probe.byteLength).toBe(0) // freed (detached), not left to the garbage collector
      // A 20 MiB stream written in 1 MiB pieces, and 300 small files, all through freed work buffers.
      const stream = randomBytes(20 * 1024 * 1024)
      const writer = blobs.chunkedWriter()
      for (let at = 0; at < stream.length; at += 1024 * 1024) await writer.write(stream.subarray(at, at + 1024 * 1024))
      const chunks = await writer.end()
      const files = Array.from({ length: 300 }, (_, i) => randomBytes(1000 + i * 37))
      const refs = (await blobs.putWhole(files)) as BlobRef[]
      await blobs.flush()
      const back = await Promise.all(chunks.map((c) => blobs.read(c.ref!)))
      expect(Buffer.concat(back).equals(stream)).toBe(true)
      expect(chunks[0].start).toBe(0)
      expect(chunks[chunks.length - 1].end).toBe(stream.length)
      for (const i of [0, 150, 299]) expect((await blobs.read(refs[i])).equals(files[i])).toBe(true)
    } finally {
      await pool.close()
    }
  }, 60_000)
})

describe('damage is detected, never returned as data', () => {
  let env: ReturnType<typeof setup>
  let refs: BlobRef[]
  let files: Buffer[]

  beforeAll(async () => {
    env = setup()
    files = [randomBytes(5000), Buffer.from('text '.repeat(2000)), randomBytes(2 * 1024 * 1024)]
    refs = (await env.blobs.putWhole(files)) as BlobRef[]
    await env.blobs.flush()
  })
  afterAll(async () => {
    await env.pool.close()
  })

  async function readAll(store: ObjectStore, keys: RepoKeys): Promise<'ok' | 'error'> {
    const fresh = new BlobStore(store, keys, { pool: env.pool })
    try {
      for (let i = 0; i < refs.length; i++) {
        const data = await fresh.read(refs[i])
        if (!data.equals(files[i])) throw new Error('WRONG DATA RETURNED')
      }
      return 'ok'
    } catch (err) {
      if ((err as Error).message === 'WRONG DATA RETURNED') throw err
      expect(err).toBeInstanceOf(BlobReadError)
      return 'error'
    }
  }

  function verifyAll(segs: Map<string, Buffer>, keys: RepoKeys): 'ok' | 'error' {
    try {
      for (const [key, data] of segs) {
        verifySegment(keys, key.split('/').pop()!, data, (ref, sealed) => decodeBlob(keys, ref.id, sealed, ref.raw))
      }
      return 'ok'
    } catch {
      return 'error'
    }
  }

  async function segments(store: ObjectStore): Promise<Map<string, Buffer>> {
    const out = new Map<string, Buffer>()
    for await (const o of listAll(store, 'seg/')) out.set(o.key, await store.get(o.key))
    return out
  }

  it('flipping any sampled byte of a segment fails the read or the verification', async () => {
    const original = await segments(env.store)
    expect(original.size).toBe(1)
    const [key, data] = [...original][0]
    expect(verifyAll(original, env.keys)).toBe('ok')
    // The header, the first record, the index and the trailer byte by byte; a sample of the rest.
    const positions = new Set<number>()
    for (let i = 0; i < 600; i++) positions.add(i)
    for (let i = data.length - 600; i < data.length; i++) positions.add(i)
    for (let i = 0; i < 300; i++) positions.add(Math.floor(Math.random() * data.length))
    for (const pos of positions) {
      const damaged = Buffer.from(data)
      damaged[pos] ^= 0x40
      const readOutcome = await (async () => {
        const store = new MemoryStore(`dmg-${randomBytes(4).toString('hex')}`)
        await store.put(key, damaged)
        return readAll(store, env.keys)
      })()
      const verifyOutcome = verifyAll(new Map([[key, damaged]]), env.keys)
      // The bytes of a record are read; the header, index and trailer are verified.
      expect(readOutcome === 'error' || verifyOutcome === 'error', `byte ${pos}`).toBe(true)
      expect(verifyOutcome, `byte ${pos}`).toBe('error')
    }
  }, 120_000)

  it('a truncated segment, a swapped segment, or the wrong key is an error', async () => {
    const original = await segments(env.store)
    const [key, data] = [...original][0]
    // Cut inside the last record: reading it fails. Cut inside the index: the records still
    // read correctly, and verification reports the damage.
    const truncated = new MemoryStore(`trunc-${randomBytes(4).toString('hex')}`)
    await truncated.put(key, data.subarray(0, data.length >> 1))
    expect(await readAll(truncated, env.keys)).toBe('error')
    expect(verifyAll(new Map([[key, data.subarray(0, data.length >> 1)]]), env.keys)).toBe('error')
    expect(verifyAll(new Map([[key, data.subarray(0, data.length - 100)]]), env.keys)).toBe('error')

    // Another segment with blobs at the same offsets, placed under this segment's name.
    const other = setup()
    await other.blobs.putWhole(files.map((f) => Buffer.from(f)))
    await other.blobs.flush()
    const otherData = [...(await segments(other.store)).values()][0]
    const swapped = new MemoryStore(`swap-${randomBytes(4).toString('hex')}`)
    await swapped.put(key, otherData)
    expect(await readAll(swapped, env.keys)).toBe('error')
    await other.pool.close()

    const wrongKeys = new RepoKeys(randomBytes(32), env.keys.repoId)
    expect(await readAll(env.store, wrongKeys)).toBe('error')
  })
})

describe('nothing readable in the bucket', () => {
  it('finds no 16-byte plaintext substring and no file name in any object', async () => {
    const env = setup()
    try {
      const files = corpus(1024 * 1024)
      expect(files.length).toBeGreaterThan(3)
      await env.blobs.putWhole(files.map((f) => f.data))
      await env.blobs.putChunked(Buffer.concat(files.map((f) => f.data)))
      await env.blobs.flush()
      const windows = new Set<string>()
      for (const f of files) {
        for (let i = 0; i + 16 <= f.data.length; i++) windows.add(f.data.toString('latin1', i, i + 16))
      }
      let scanned = 0
      for await (const o of listAll(env.store, '')) {
        const bytes = await env.store.get(o.key)
        scanned += bytes.length
        const text = bytes.toString('latin1')
        for (let i = 0; i + 16 <= text.length; i++) {
          if (windows.has(text.slice(i, i + 16))) throw new Error(`plaintext found in ${o.key} at ${i}: ${JSON.stringify(text.slice(i, i + 16))}`)
        }
        for (const f of files) expect(text.includes(f.name)).toBe(false)
      }
      expect(scanned).toBeGreaterThan(100_000)
    } finally {
      await env.pool.close()
    }
  }, 60_000)
})


describe('BlobIndex (the deduplication index)', () => {
  it('finds every blob it was given, never one it was not, and updates in place', () => {
    const index = new BlobIndex()
    const refs = Array.from({ length: 20_000 }, (_, i) => ({ id: randomBytes(32), seg: `seg${i % 7}`, off: i * 100, len: 50 + (i % 13), raw: 60 + i }))
    for (const ref of refs) index.set(ref)
    expect(index.size).toBe(refs.length)
    for (const ref of refs) expect(index.get(ref.id)).toEqual(ref)
    for (let i = 0; i < 1000; i++) expect(index.get(randomBytes(32))).toBeUndefined()
    // Same first four bytes (same hash slot), different ID: a distinct blob.
    const twin = Buffer.from(refs[0].id)
    twin[31] ^= 1
    expect(index.has(twin)).toBe(false)
    index.set({ ...refs[0], seg: 'moved', off: 1 })
    expect(index.size).toBe(refs.length)
    expect(index.get(refs[0].id)).toMatchObject({ seg: 'moved', off: 1 })
    expect([...index.values()]).toHaveLength(refs.length)
    index.clear()
    expect(index.size).toBe(0)
    expect(index.get(refs[5].id)).toBeUndefined()
    index.set(refs[5])
    expect(index.get(refs[5].id)).toEqual(refs[5])
  })
})
