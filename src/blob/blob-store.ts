import { randomBytes } from 'node:crypto'
import { LRUCache } from 'lru-cache'
import { pack, unpack } from 'msgpackr'
import type { RepoKeys } from '../crypto/index.js'
import { bodyLength, listAll, NotFoundError, type ObjectStore } from '../store/index.js'
import { garbageMade } from '../util/gc-pacer.js'
import { freeBuffer } from '../util/native.js'
import { Arenas } from './arenas.js'
import { BlobIndex } from './blob-index.js'
import { Relocations } from './relocations.js'
import { encodeBlob, isAllZero, openBlob, type OpenedBlob } from './codec.js'
import type { Chunker } from './chunker.js'
import type { BlobEncoder, BlobWorkerPool, EncodedChunk } from './pool.js'
import { readSegmentIndex, SegmentBuilder, segmentKey, TRAILER_BYTES, type BlobRef } from './segment.js'

/** Where sealed blob bytes come from; the portal supplies a caching one. */
export interface SegmentSource {
  /** Bytes of a segment. They are the caller's: a blob read is decrypted over them (no buffer shared with another reader). */
  read(seg: string, off: number, len: number): Promise<Buffer>
  /** A segment being stored, with its bytes: the source may keep a copy (the portal caches it). Must not throw. */
  writeThrough?(seg: string, parts: Buffer[]): Promise<void>
}

export interface BlobStoreOptions {
  pool: BlobWorkerPool
  /** Encodes instead of the pool's workers (the native encoder, on the libuv thread pool). */
  encoder?: BlobEncoder
  /**
   * Finds cut points on the calling thread. Worth it only for the native
   * chunker (~1.2 GiB/s): it saves a round trip to a worker that may be busy
   * encoding, which otherwise stalls the stream's sequential stage.
   */
  localChunker?: Chunker
  /**
   * Seal a segment once it reaches this many bytes (default 4 MiB). The open
   * segment and those uploading are held in memory: with 8 MiB, tar's final
   * flush peaked 10 MiB higher (154-162 against 144-149 MiB), for half the
   * PUTs of a large file.
   */
  segmentSize?: number
  /** Sealed segments allowed in memory while they upload; writers wait beyond this. */
  maxUploads?: number
  source?: SegmentSource
  /** Decoded-blob memory cache, in bytes. */
  cacheBytes?: number
  /** Write large compressed blobs as independent frames (repository format 2); the pool's workers must agree. */
  frames?: boolean
}

export interface PlacedChunk {
  /** Byte range of the input this blob holds. */
  start: number
  end: number
  /** The stored blob; absent for an all-zero chunk, which is not stored (it reads as a hole). */
  ref?: BlobRef
}

export interface BlobStats {
  blobsStored: number
  blobsDeduplicated: number
  rawBytes: number
  storedBytes: number
  segmentsUploaded: number
  indexObjects: number
  /** Blobs read and decoded (cache misses). */
  blobsDecoded: number
}

export class BlobReadError extends Error {
  constructor(readonly ref: BlobRef, cause: unknown) {
    super(`blob ${ref.id.toString('hex').slice(0, 16)} (segment ${ref.seg} @${ref.off}+${ref.len}): ${(cause as Error).message}`, { cause })
    this.name = 'BlobReadError'
  }
}

interface SealedSegment {
  builder: SegmentBuilder
  parts: Buffer[]
  length: number
  upload?: Promise<void>
  error?: unknown
  /** The source's copy (write-through), made once, alongside the first upload attempt. */
  copied?: Promise<void>
}

const ENCODE_BATCH_BYTES = 2 * 1024 * 1024
/** putWholeInto's buffer: a flusher's batch of small files (4 MiB, plus the file that crossed that, at most 1 MiB) fits. */
const BATCH_BUFFER_BYTES = 5 * 1024 * 1024
/**
 * Work this small is encoded on the calling thread: a round trip to another
 * thread costs more than hashing, compressing and sealing a few small files
 * (and without the native encoder, a process that only ever writes small
 * files never starts the worker threads, ~20 MiB each).
 */
const INLINE_ENCODE_BYTES = 256 * 1024
/** Less than this is cut on the event loop: a thread-pool round trip would cost more than the scan (~1 ms per MiB). */
const ASYNC_CUTS_BYTES = 256 * 1024

export function indexKey(id: string): string {
  return `index/${id}`
}

export function indexAad(id: string): string {
  return `index:${id}`
}

/**
 * The content-addressed blob layer: splits data into chunks, stores each
 * distinct chunk once (encoded by the worker pool), packs blobs into
 * segments, records which segment holds which blob in index objects, and reads
 * blobs back with one ranged GET each.
 */
export class BlobStore {
  readonly stats: BlobStats = { blobsStored: 0, blobsDeduplicated: 0, rawBytes: 0, storedBytes: 0, segmentsUploaded: 0, indexObjects: 0, blobsDecoded: 0 }
  private readonly known = new BlobIndex()
  private open?: SegmentBuilder
  private readonly sealed = new Map<string, SealedSegment>()
  private unindexed: BlobRef[] = []
  readonly relocations = new Relocations()
  private relocationsLoaded?: Promise<void>
  /** Segments a GC run is about to delete: never deduplicate against them (see repo/gc.ts). */
  private readonly condemned = new Set<string>()
  /** Opened blobs: decoded, or for a framed blob decrypted but still compressed (its frames decompress per read). */
  private readonly decoded: LRUCache<string, OpenedBlob>
  /** Blobs being read and opened now, shared by everyone who asks meanwhile. */
  private readonly decoding = new Map<string, Promise<OpenedBlob>>()
  private readonly segmentSize: number
  private readonly maxUploads: number
  /** Shared work buffers free for the next batch or piece (see workBuffer). */
  private readonly spares: SharedArrayBuffer[] = []
  /** The encoder's output buffers, freed once their blobs are stored. */
  private readonly arenas = new Arenas()
  private readonly source: SegmentSource

  constructor(
    private readonly store: ObjectStore,
    private readonly keys: RepoKeys,
    private readonly options: BlobStoreOptions,
  ) {
    this.segmentSize = options.segmentSize ?? 4 * 1024 * 1024
    this.maxUploads = options.maxUploads ?? 2
    this.source = options.source ?? {
      read: (seg, off, len) => store.get(segmentKey(seg), { start: off, end: off + len }),
    }
    // Small blobs cost their object overhead more than their bytes: count at least 256 each.
    this.decoded = new LRUCache<string, OpenedBlob>({ maxSize: options.cacheBytes ?? 16 * 1024 * 1024, sizeCalculation: (b) => Math.max(256, b.heldBytes) })
  }

  /** Number of distinct blobs this store knows of (index plus this session). */
  get knownBlobs(): number {
    return this.known.size
  }

  /** Bytes of sealed segments not yet confirmed in the bucket. */
  get pendingUploadBytes(): number {
    let n = this.open?.byteLength ?? 0
    for (const s of this.sealed.values()) n += s.length
    return n
  }

  /** Loads every index object so later writes deduplicate against the whole repository. */
  async loadIndex(): Promise<void> {
    for await (const obj of listAll(this.store, 'index/')) {
      const id = obj.key.slice('index/'.length)
      const body = this.keys.open('data', await this.store.get(obj.key), indexAad(id), `index ${id}`)
      for (const [seg, rows] of unpack(body) as [string, [Uint8Array, number, number, number][]][]) {
        for (const [rawId, off, len, raw] of rows) {
          this.known.set({ id: Buffer.from(rawId), seg, off, len, raw })
        }
      }
    }
  }

  /**
   * Rebuilds the blob index from the segments themselves (each carries its
   * own sealed index): reads every segment's trailer and index, writes one
   * new index object, then deletes the old ones. For a lost or damaged index.
   */
  async rebuildIndex(): Promise<{ segments: number; blobs: number }> {
    const oldIndexes: string[] = []
    for await (const obj of listAll(this.store, 'index/')) oldIndexes.push(obj.key)
    this.known.clear()
    let segments = 0
    for await (const obj of listAll(this.store, 'seg/')) {
      const seg = obj.key.slice(obj.key.lastIndexOf('/') + 1)
      const trailer = await this.store.get(obj.key, { start: Math.max(0, obj.size - TRAILER_BYTES) })
      const { indexOffset } = readSegmentIndex(this.keys, seg, trailer, obj.size)
      const tail = await this.store.get(obj.key, { start: indexOffset })
      for (const ref of readSegmentIndex(this.keys, seg, tail, obj.size).refs ?? []) {
        this.known.set(ref)
        this.unindexed.push(ref)
      }
      segments++
    }
    await this.flush()
    await this.store.deleteMany(oldIndexes)
    return { segments, blobs: this.known.size }
  }

  lookup(id: Buffer): BlobRef | undefined {
    const ref = this.known.get(id)
    return ref && !this.condemned.has(ref.seg) ? ref : undefined
  }

  /** Stops deduplicating against these segments: a GC run will delete them unless a commit references them first. */
  condemn(segments: Iterable<string>): void {
    for (const seg of segments) this.condemned.add(seg)
  }

  /**
   * Stores `data` as content-defined chunks. With `final: false` the last chunk
   * is not stored (its end is where the data stops, not a content boundary);
   * `consumed` says how many leading bytes were stored, and the caller passes
   * the rest again with the data that follows.
   */
  async putChunked(data: Buffer, final = true): Promise<{ chunks: PlacedChunk[]; consumed: number }> {
    if (data.length === 0) return { chunks: [], consumed: 0 }
    const sab = toShared(data)
    let cuts = await this.cuts(sab, 0, data.length)
    if (!final) cuts = cuts.slice(0, -1)
    const ranges: [number, number][] = cuts.map((end, i) => [i === 0 ? 0 : cuts[i - 1], end])
    const encoded = await this.encodeRanges(sab, ranges)
    const chunks = this.place(ranges, encoded)
    await this.waitForUploadRoom()
    return { chunks, consumed: cuts.length ? cuts[cuts.length - 1] : 0 }
  }

  /**
   * A writer for one stream of bytes (a file written front to back). Finding
   * cut points is sequential — each piece starts where the previous chunk
   * ended — but encoding is not: while one piece's chunks encode on the
   * workers, the next piece's cut points are already being found.
   */
  chunkedWriter(): ChunkedWriter {
    return new ChunkedWriter(this)
  }

  /** Stores each buffer whole as one blob (small files); all-zero buffers are not stored (undefined). */
  async putWhole(items: Buffer[]): Promise<(BlobRef | undefined)[]> {
    return this.putWholeInto(
      items.map((item) => item.length),
      async (views) => items.forEach((item, i) => item.copy(views[i])),
    )
  }

  /**
   * putWhole() for bytes made straight into the memory the workers read,
   * saving a copy: `fill` gets one zeroed view per length to fill.
   */
  async putWholeInto(lengths: number[], fill: (views: Buffer[]) => Promise<void>): Promise<(BlobRef | undefined)[]> {
    if (lengths.length === 0) return []
    const total = lengths.reduce((n, length) => n + length, 0)
    // A buffer of its size for a batch under 1 MiB (a flush of a few files), else one the next batch fits too.
    const sab = this.workBuffer(total, total < 1024 * 1024 ? total : Math.max(total, BATCH_BUFFER_BYTES))
    const view = Buffer.from(sab, 0, total)
    const ranges: [number, number][] = []
    let at = 0
    for (const length of lengths) {
      ranges.push([at, at + length])
      at += length
    }
    await fill(ranges.map(([start, end]) => view.subarray(start, end)))
    const encoded = await this.encodeRanges(sab, ranges)
    // Encoded without error: no encoder reads the buffer any more (after an error one still might).
    this.doneWith(sab)
    const refs = this.place(ranges, encoded).map((c) => c.ref)
    await this.waitForUploadRoom()
    return refs
  }

  /**
   * @internal Memory for bytes on their way to the encoder — a batch of small
   * files, a piece of a stream — with its first `bytes` zeroed; `size` is
   * how large to make a shared one, so that it fits the next batch or piece
   * too. Handed back with doneWith() once nothing reads it.
   *
   * A flush passes tens of MiB through such buffers, and V8 frees memory
   * outside its heap only when it next collects, which it does after 64 MiB
   * more of it: with a new buffer per batch and per piece, the daemon's
   * resident set grew by as much during every large flush. When only this
   * thread and the native addon read them (native encoder and chunker), they
   * are ordinary buffers, freed the moment they are done with. Worker
   * threads need shared memory, which cannot be freed explicitly: a few
   * shared buffers are kept for reuse instead, until the flush ends.
   */
  workBuffer(bytes: number, size = bytes): ArrayBufferLike {
    if (this.nativeOnly) return new ArrayBuffer(Math.max(1, bytes))
    const i = this.spares.findIndex((b) => b.byteLength >= bytes)
    if (i < 0) return new SharedArrayBuffer(Math.max(1, bytes, size))
    const spare = this.spares.splice(i, 1)[0]
    new Uint8Array(spare, 0, bytes).fill(0)
    return spare
  }

  /** @internal A work buffer nothing reads any more (never one an encoder may still be reading after an error). */
  doneWith(buffer: ArrayBufferLike): void {
    if (!(buffer instanceof SharedArrayBuffer)) freeBuffer(new Uint8Array(buffer))
    else if (this.spares.length < MAX_SPARES) this.spares.push(buffer)
  }

  /** Whether only this thread and the native addon read work buffers (no worker threads). */
  private get nativeOnly(): boolean {
    return this.options.encoder !== undefined && this.options.localChunker !== undefined
  }

  /** Seals the open segment, waits for every upload, and records new blobs in an index object. */
  async flush(): Promise<void> {
    this.spares.length = 0
    this.sealOpen()
    for (const [seg, s] of this.sealed) {
      if (s.error !== undefined) this.startUpload(seg, s)
    }
    await Promise.all([...this.sealed.values()].map((s) => s.upload))
    const failed = [...this.sealed.values()].find((s) => s.error !== undefined)
    if (failed) throw failed.error
    if (this.unindexed.length > 0) {
      const refs = this.unindexed
      this.unindexed = []
      const id = randomBytes(16).toString('hex')
      const bySegment = new Map<string, [Buffer, number, number, number][]>()
      for (const r of refs) {
        let rows = bySegment.get(r.seg)
        if (!rows) bySegment.set(r.seg, (rows = []))
        rows.push([r.id, r.off, r.len, r.raw])
      }
      try {
        await this.store.put(indexKey(id), this.keys.seal('data', pack([...bySegment]), indexAad(id)))
      } catch (err) {
        this.unindexed = refs.concat(this.unindexed)
        throw err
      }
      this.stats.indexObjects++
    }
  }

  /**
   * Reads and decodes one blob; damage surfaces as BlobReadError, never as
   * wrong bytes. A blob GC has moved is found through the relocations
   * (reloaded once when its old segment turns out to be gone).
   */
  async read(ref: BlobRef): Promise<Buffer> {
    return this.readRange(ref, 0, ref.raw)
  }

  /**
   * Bytes [from, to) of a blob's plaintext: of a framed blob, only the frames
   * holding them are decompressed. `keep: false` leaves the blob out of the
   * decoded cache (see FileSystem.assembleParts).
   */
  async readRange(ref: BlobRef, from: number, to: number, keep = true): Promise<Buffer> {
    const blob = await this.opened(ref, keep)
    try {
      return blob.slice(from, to)
    } catch (err) {
      throw new BlobReadError(ref, err)
    }
  }

  /**
   * readRange() into `into` at `at`, without a buffer of its own in between.
   * `keep: false` leaves the blob out of the decoded cache: a flush reads the
   * chunks around changed bytes to store them again, and those old blobs are
   * not read afterwards (under random writes they had filled the cache).
   */
  async readRangeInto(ref: BlobRef, from: number, to: number, into: Buffer, at: number, keep = true): Promise<void> {
    const blob = await this.opened(ref, keep)
    try {
      blob.copyInto(from, to, into, at, keep)
    } catch (err) {
      throw new BlobReadError(ref, err)
    }
  }

  /** Reads and opens a blob into the cache ahead of its readers (errors are left for them). */
  prefetch(ref: BlobRef): void {
    this.opened(ref).catch(() => undefined)
  }

  private opened(ref: BlobRef, keep = true): Promise<OpenedBlob> {
    const cacheKey = ref.id.toString('latin1')
    const hit = this.decoded.get(cacheKey)
    if (hit) return Promise.resolve(hit)
    // A reader and the read-ahead (or two neighbouring READs) often want the same blob at once: open it once.
    let pending = this.decoding.get(cacheKey)
    if (!pending) {
      pending = this.readUncached(ref, cacheKey, keep).finally(() => this.decoding.delete(cacheKey))
      this.decoding.set(cacheKey, pending)
    }
    return pending
  }

  private async readUncached(ref: BlobRef, cacheKey: string, keep: boolean): Promise<OpenedBlob> {
    let sealed = this.pendingBytes(ref)
    // Bytes still waiting for upload are read as they are; bytes read from the source are ours to decrypt over.
    const inPlace = !sealed
    let at = ref
    try {
      if (!sealed) {
        await (this.relocationsLoaded ??= this.loadRelocations())
        at = this.relocations.translate(ref)
        try {
          sealed = await this.source.read(at.seg, at.off, at.len)
        } catch (err) {
          if (!(err instanceof NotFoundError)) throw err
          await this.loadRelocations()
          const moved = this.relocations.translate(ref)
          if (moved.seg === at.seg) throw err
          at = moved
          sealed = await this.source.read(at.seg, at.off, at.len)
        }
      }
      if (sealed.length !== at.len) throw new Error(`read ${sealed.length} of ${at.len} bytes`)
      const blob = openBlob(this.keys, ref.id, sealed, ref.raw, inPlace)
      this.stats.blobsDecoded++
      if (keep) this.decoded.set(cacheKey, blob)
      // Read from the source: a buffer of its own that is garbage once the cache lets go of the blob.
      if (inPlace) garbageMade(sealed.length)
      return blob
    } catch (err) {
      throw new BlobReadError(at, err)
    }
  }

  /** Where a blob lives now (after GC repacks); loads the relocations on first use. */
  async locate(ref: BlobRef): Promise<BlobRef> {
    await (this.relocationsLoaded ??= this.loadRelocations())
    return this.relocations.translate(ref)
  }

  private async loadRelocations(): Promise<void> {
    await this.relocations.load(this.store, this.keys)
  }

  /** @internal Encodes ranges of a shared buffer off this thread (native encoder or worker pool), in batches of a few MiB. */
  async encodeRanges(sab: ArrayBufferLike, ranges: [number, number][]): Promise<EncodedChunk[]> {
    const total = ranges.reduce((n, [s, e]) => n + e - s, 0)
    if (total <= INLINE_ENCODE_BYTES) return ranges.map(([s, e]) => this.encodeHere(Buffer.from(sab, s, e - s)))
    const batches: [number, number][][] = []
    let batch: [number, number][] = []
    let bytes = 0
    for (const r of ranges) {
      batch.push(r)
      bytes += r[1] - r[0]
      if (bytes >= ENCODE_BATCH_BYTES) {
        batches.push(batch)
        batch = []
        bytes = 0
      }
    }
    if (batch.length) batches.push(batch)
    const encoder = this.options.encoder ?? this.options.pool
    const results = await Promise.all(batches.map((b) => encoder.encode(this.options.encoder ? sab : shared(sab), b[0][0], b[b.length - 1][1], b)))
    return results.flat()
  }

  private encodeHere(data: Buffer): EncodedChunk {
    if (isAllZero(data)) return { id: Buffer.alloc(0), sealed: Buffer.alloc(0), rawLength: data.length, zero: true }
    return { ...encodeBlob(this.keys, data, { frames: this.options.frames }), zero: false }
  }

  /**
   * @internal Finds cut points of sab[start, end): with the native chunker on
   * the libuv thread pool (so FUSE requests are answered meanwhile), else on
   * the worker pool. The caller keeps those bytes unchanged until it settles.
   */
  async cuts(sab: ArrayBufferLike, start: number, end: number): Promise<number[]> {
    const local = this.options.localChunker
    if (local) {
      const data = new Uint8Array(sab, start, end - start)
      const cuts = local.cutsAsync && data.length >= ASYNC_CUTS_BYTES ? await local.cutsAsync(data) : local.cuts(data)
      return start === 0 ? cuts : cuts.map((c) => c + start)
    }
    return this.options.pool.cuts(shared(sab), start, end)
  }

  /** @internal Adds encoded chunks to segments (or finds them already stored), in input order. */
  place(ranges: [number, number][], encoded: EncodedChunk[]): PlacedChunk[] {
    const chunks: PlacedChunk[] = []
    const arenas = new Set<Buffer>()
    for (let i = 0; i < ranges.length; i++) {
      const e = encoded[i]
      if (e.arena) arenas.add(e.arena)
      const [start, end] = ranges[i]
      if (e.zero) {
        chunks.push({ start, end })
        continue
      }
      let ref = this.lookup(e.id)
      if (ref) {
        this.stats.blobsDeduplicated++
      } else {
        if (this.open && this.open.byteLength + e.sealed.length > this.segmentSize && this.open.blobCount > 0) this.sealOpen()
        this.open ??= new SegmentBuilder()
        ref = this.open.add(e.id, e.sealed, e.rawLength)
        if (e.arena) this.arenas.hold(this.open.id, e.arena)
        this.known.set(ref)
        this.stats.blobsStored++
        this.stats.rawBytes += e.rawLength
        this.stats.storedBytes += e.sealed.length
      }
      chunks.push({ start, end, ref })
    }
    this.arenas.releaseUnheld(arenas)
    return chunks
  }

  /** Waits while too many sealed segments are in memory (backpressure on writers). */
  async waitForUploadRoom(): Promise<void> {
    while (this.sealed.size >= this.maxUploads) {
      const oldest = this.sealed.values().next().value!
      // An upload that failed (the store was away) is tried again here, not only by flush():
      // otherwise writers would keep meeting its old error after the store came back.
      if (oldest.error !== undefined) this.startUpload(oldest.builder.id, oldest)
      await oldest.upload
      if (oldest.error !== undefined) throw oldest.error
    }
  }

  private sealOpen(): void {
    const builder = this.open
    if (!builder || builder.blobCount === 0) return
    this.open = undefined
    const parts = builder.finish(this.keys)
    const s: SealedSegment = { builder, parts, length: bodyLength(parts) }
    this.sealed.set(builder.id, s)
    this.startUpload(builder.id, s)
  }

  private startUpload(seg: string, s: SealedSegment): void {
    s.error = undefined
    // The copy runs alongside the put rather than after it, so the segment's memory (freed below, with its
    // arenas) is held no longer than the slower of the two: the put, against a bucket across a network.
    s.copied ??= this.source.writeThrough?.(seg, s.parts).catch(() => undefined)
    s.upload = Promise.all([this.store.put(segmentKey(seg), s.parts), s.copied]).then(
      () => {
        this.sealed.delete(seg)
        this.arenas.stored(seg)
        this.unindexed.push(...s.builder.blobs)
        this.stats.segmentsUploaded++
      },
      (err) => {
        s.error = err
      },
    )
  }

  private pendingBytes(ref: BlobRef): Buffer | undefined {
    const fromOpen = this.open?.slice(ref)
    if (fromOpen) return fromOpen
    const s = this.sealed.get(ref.seg)
    return s?.builder.slice(ref)
  }
}

/** Encodes pieces concurrently (at most this many in flight) while cut points advance. */
const WRITER_MAX_IN_FLIGHT = 4
/** Piece buffers are allocated in steps of this size... */
const PIECE_STEP = 512 * 1024
/**
 * ...and at least this large: a 2 MiB piece plus the tail carried from the
 * last (under 2 MiB unless a chunk is longer), so that a spare fits the next
 * piece. Sized to the piece alone, most spares were a step too small for the
 * next one, which then took a new buffer, and the old ones became garbage.
 */
const PIECE_BYTES = 4 * 1024 * 1024
/** Free shared buffers kept for reuse (BlobStore.spares): a stream frees about one as it needs the next. */
const MAX_SPARES = 3

export class ChunkedWriter {
  private carry: Buffer = Buffer.alloc(0)
  private offset = 0
  private readonly inFlight: Promise<PlacedChunk[]>[] = []
  private readonly done: PlacedChunk[] = []
  /**
   * The stream's piece buffers, handed back once free (BlobStore.doneWith:
   * freed at once, or kept as a spare shared with the next writer and with
   * small-file batches): a 512 MiB file is ~250 pieces, and a fresh buffer
   * each, freed whenever the garbage collector got to it, left the C heap a
   * patchwork of them. A piece is free when its encoding has settled and the
   * tail it carried has been copied into the next piece (or the stream has
   * ended): `holds` counts those two.
   */
  private readonly holds = new Map<ArrayBufferLike, number>()
  private carrySab?: ArrayBufferLike

  constructor(private readonly blobs: BlobStore) {}

  /** Adds the next bytes of the stream. Resolves once they are queued (with backpressure). */
  async write(piece: Buffer): Promise<void> {
    await this.writeInto(piece.length, async (into) => void piece.copy(into))
  }

  /**
   * write() for bytes made straight into the memory the chunker and workers
   * read, saving a copy: `fill` gets the next `length` bytes of the stream to
   * write, zeroed.
   */
  async writeInto(length: number, fill: (into: Buffer) => Promise<void>): Promise<void> {
    const { sab, at } = this.nextPiece(length)
    await fill(Buffer.from(sab, at, length))
    await this.submit(sab, at + length, false)
  }

  /** Stores the rest and returns every chunk of the stream, in order, with stream offsets. */
  async end(): Promise<PlacedChunk[]> {
    if (this.carry.length) {
      const { sab, at } = this.nextPiece(0)
      await this.submit(sab, at, true)
    }
    while (this.inFlight.length) this.done.push(...(await this.inFlight.shift()!))
    if (this.carrySab) this.release(this.carrySab) // no next piece will copy from it
    this.carrySab = undefined
    await this.blobs.waitForUploadRoom()
    return this.done
  }

  /** A piece buffer holding the carried tail, then `room` zeroed bytes (at `at`). */
  private nextPiece(room: number): { sab: ArrayBufferLike; at: number } {
    const need = this.carry.length + room
    const sab = this.blobs.workBuffer(need, Math.max(PIECE_BYTES, Math.ceil(need / PIECE_STEP) * PIECE_STEP))
    Buffer.from(sab, 0, need).set(this.carry, 0)
    const at = this.carry.length
    this.carry = Buffer.alloc(0)
    if (this.carrySab) this.release(this.carrySab)
    this.carrySab = undefined
    return { sab, at }
  }

  private release(sab: ArrayBufferLike): void {
    const left = (this.holds.get(sab) ?? 1) - 1
    if (left > 0) return void this.holds.set(sab, left)
    this.holds.delete(sab)
    this.blobs.doneWith(sab)
  }

  private async submit(sab: ArrayBufferLike, length: number, final: boolean): Promise<void> {
    const data = Buffer.from(sab, 0, length)
    let cuts = await this.blobs.cuts(sab, 0, length)
    if (!final) cuts = cuts.slice(0, -1)
    const consumed = cuts.length ? cuts[cuts.length - 1] : 0
    const base = this.offset
    const ranges: [number, number][] = cuts.map((end, i) => [i === 0 ? 0 : cuts[i - 1], end])
    const previous = this.inFlight[this.inFlight.length - 1]
    this.holds.set(sab, 2)
    this.inFlight.push(
      (async () => {
        let encoded: EncodedChunk[]
        try {
          encoded = await this.blobs.encodeRanges(sab, ranges)
        } catch (err) {
          // Another batch of this piece may still be encoding from it: never hand it back.
          this.holds.set(sab, Infinity)
          throw err
        }
        this.release(sab)
        // Place strictly in stream order: wait for the piece before this one.
        if (previous) await previous.catch(() => undefined)
        return this.blobs.place(ranges, encoded).map((c) => ({ start: c.start + base, end: c.end + base, ref: c.ref }))
      })(),
    )
    this.offset += consumed
    this.carry = data.subarray(consumed)
    this.carrySab = sab
    while (this.inFlight.length >= WRITER_MAX_IN_FLIGHT) this.done.push(...(await this.inFlight.shift()!))
    await this.blobs.waitForUploadRoom()
  }
}

/** The worker pool reads shared memory only (work buffers are shared whenever workers may read them). */
function shared(buffer: ArrayBufferLike): SharedArrayBuffer {
  if (!(buffer instanceof SharedArrayBuffer)) throw new TypeError('the blob worker pool reads shared memory only')
  return buffer
}

/** A copy of `bytes` the workers can read without another. */
function toShared(bytes: Buffer): SharedArrayBuffer {
  const sab = new SharedArrayBuffer(bytes.length)
  Buffer.from(sab).set(bytes, 0)
  return sab
}
