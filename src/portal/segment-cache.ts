import { randomBytes } from 'node:crypto'
import fs, { promises as fsp } from 'node:fs'
import path from 'node:path'
import type { SegmentSource } from '../blob/index.js'
import { segmentKey } from '../blob/index.js'
import { bodyLength, type ObjectStore } from '../store/index.js'
import { OpenFiles } from './open-files.js'

/**
 * The portal's read cache: windows of segment objects, stored on local disk
 * exactly as they are in the bucket (sealed blobs: nothing here is
 * plaintext). A miss fetches the whole aligned window with one ranged GET,
 * so the many small files written together — and packed together — come in
 * with one request; segments this node stores are written through as they
 * upload, so data just committed is read back without one. Shared by every
 * volume and mount on the node (segment IDs are random and never reused);
 * bounded by the portal's byte cap with least-recently-used eviction across
 * processes (file mtimes), and never filling the disk (see Portal).
 */

/**
 * Reads up to this size are served on the calling thread. A blob of a small
 * file is a few KiB: through the thread pool, each read from a window made a
 * round trip of tens of µs on this 2-core VM (the read itself, from the page
 * cache, takes ~5), longer than decrypting and decompressing the blob. Larger
 * reads (a sequential reader's blobs, up to a window) stay off the event loop.
 */
const SYNC_READ_BYTES = 64 * 1024

export interface SegmentCacheStats {
  hits: number
  misses: number
  bytesFetched: number
  bytesServed: number
  evictedBytes: number
}

export class SegmentCache implements SegmentSource {
  readonly stats: SegmentCacheStats = { hits: 0, misses: 0, bytesFetched: 0, bytesServed: 0, evictedBytes: 0 }
  private readonly inflight = new Map<string, Promise<Buffer>>()
  private readonly handles = new OpenFiles()
  /** Cache bytes added by this process since the last full scan. */
  private addedSinceScan = 0
  /** Room held for windows being written (counted before their files exist). */
  private writing = 0
  /** Temporary files of windows being written (counted in `writing`, so a scan skips them). */
  private readonly writingFiles = new Set<string>()
  /** Windows stored while a scan runs (counted in `addedSinceScan`, so the scan skips them). */
  private addedDuringScan?: Set<string>
  private usage = 0
  private scanning?: Promise<void>
  /** Last time we bumped a file's mtime (LRU order), to touch each at most once a minute. */
  private readonly touched = new Map<string, number>()

  constructor(
    private readonly store: ObjectStore,
    readonly dir: string,
    private readonly options: {
      capBytes: () => number
      windowBytes?: number
      /** Whether the disk can take `bytes` more of cache (the portal keeps room for its logs). */
      diskRoom?: (bytes: number) => Promise<boolean>
    },
  ) {}

  get windowBytes(): number {
    return this.options.windowBytes ?? 4 * 1024 * 1024
  }

  /** Bytes the cache holds on disk (as of the last scan, plus what this process added or is adding since). */
  get bytes(): number {
    return this.usage + this.addedSinceScan + this.writing
  }

  async read(seg: string, off: number, len: number): Promise<Buffer> {
    const W = this.windowBytes
    const first = Math.floor(off / W)
    const last = Math.floor((off + len - 1) / W)
    if (first === last) return this.readWindow(seg, first, off - first * W, len)
    const parts: Buffer[] = []
    for (let w = first; w <= last; w++) {
      const from = Math.max(off, w * W)
      const to = Math.min(off + len, (w + 1) * W)
      parts.push(await this.readWindow(seg, w, from - w * W, to - from))
    }
    return Buffer.concat(parts)
  }

  private file(seg: string, window: number): string {
    return path.join(this.dir, seg.slice(0, 2), `${seg}.${window}`)
  }

  private async readWindow(seg: string, window: number, start: number, len: number): Promise<Buffer> {
    const file = this.file(seg, window)
    const cached = len <= SYNC_READ_BYTES ? this.handles.withSync(file, (fd) => readAtSync(fd, start, len)) : await this.handles.with(file, (fd) => readAt(fd, start, len))
    if (cached && cached.length === len) {
      this.stats.hits++
      this.stats.bytesServed += len
      this.touch(file)
      return cached
    }
    this.stats.misses++
    const key = `${seg}.${window}`
    let pending = this.inflight.get(key)
    if (!pending) {
      pending = this.fetch(seg, window, file).finally(() => this.inflight.delete(key))
      this.inflight.set(key, pending)
    }
    const data = await pending
    this.stats.bytesServed += len
    // A copy: the fetched window is shared by every reader waiting on it (other blobs, other volumes),
    // and each decrypts its bytes in place.
    const own = Buffer.allocUnsafe(len)
    data.copy(own, 0, start, start + len)
    return own
  }

  private async fetch(seg: string, window: number, file: string): Promise<Buffer> {
    const W = this.windowBytes
    const data = await this.store.get(segmentKey(seg), { start: window * W, end: (window + 1) * W })
    this.stats.bytesFetched += data.length
    await this.storeWindow(file, [data])
    return data
  }

  /**
   * Write-through: caches a segment as it is stored in the bucket (`parts`
   * are its bytes, exactly as put), so that the first reads of data just
   * committed come from local disk rather than a GET. Without it, reading
   * back a small file after its commit fetched its whole 4 MiB window, and a
   * loop reading 2,000 such files spent most of its time on those fetches.
   */
  async writeThrough(seg: string, parts: Buffer[]): Promise<void> {
    const W = this.windowBytes
    const length = bodyLength(parts)
    for (let w = 0; w * W < length; w++) {
      const window = sliceParts(parts, w * W, Math.min(length, (w + 1) * W))
      await this.storeWindow(this.file(seg, w), window)
    }
  }

  /**
   * Caches one window, if it fits under the cap (evicting older windows
   * first: the caller waits for the eviction, so the cache cannot outrun the
   * cap). Best effort: a full disk or a race with eviction only costs a later
   * GET. Readers see the window whole or not at all (written aside, renamed).
   */
  private async storeWindow(file: string, data: Buffer[]): Promise<void> {
    const length = bodyLength(data)
    const cap = this.options.capBytes
    if (length > cap()) return
    // Under the cap is not enough when the disk is smaller than the cap: the logs come first.
    if (this.options.diskRoom && !(await this.options.diskRoom(length).catch(() => false))) return
    if (this.bytes + length > cap()) await this.enforceCap(length).catch(() => undefined)
    // The last check and the reservation (`writing`) in one synchronous step: admission takes room for
    // the logs between awaits, and must see these bytes as taken.
    if (this.bytes + length > cap()) return
    this.writing += length
    const tmp = `${file}.${randomBytes(4).toString('hex')}.tmp`
    this.writingFiles.add(tmp)
    try {
      await fsp.mkdir(path.dirname(file), { recursive: true, mode: 0o700 })
      await fsp.writeFile(tmp, data, { mode: 0o600 })
      await fsp.rename(tmp, file)
      this.addedSinceScan += length
      this.addedDuringScan?.add(file)
    } catch {
      await fsp.rm(tmp, { force: true }).catch(() => undefined)
    } finally {
      this.writing -= length
      this.writingFiles.delete(tmp)
    }
  }

  private touch(file: string): void {
    const now = Date.now()
    if ((this.touched.get(file) ?? 0) > now - 60_000) return
    this.touched.set(file, now)
    if (this.touched.size > 100_000) this.touched.clear()
    fsp.utimes(file, new Date(), new Date()).catch(() => undefined)
  }

  /**
   * Scans the cache directory and evicts least-recently-used windows until
   * under the cap with `room` bytes to spare. One scan runs at a time; a
   * caller that needs more room than the running scan makes checks again.
   */
  enforceCap(room = 0): Promise<void> {
    this.scanning ??= this.scanAndEvict(() => {
      const cap = this.options.capBytes()
      if (this.bytes + room <= cap) return Infinity
      // Down to 90% of the cap (less if more room is wanted), so eviction does not run on every miss.
      return Math.min(cap * 0.9, cap - room) - this.addedSinceScan - this.writing
    }).finally(() => {
      this.scanning = undefined
      // Windows cached while the scan ran may have pushed it over again: look once more.
      if (this.bytes > this.options.capBytes()) this.enforceCap().catch(() => undefined)
    })
    return this.scanning
  }

  /**
   * Evicts least-recently-used windows until `bytes` are freed, or none is
   * left, whatever the cap: room for the logs on a full disk. Returns the
   * bytes freed.
   */
  async shrink(bytes: number): Promise<number> {
    while (this.scanning) await this.scanning.catch(() => undefined)
    const before = this.stats.evictedBytes
    this.scanning = this.scanAndEvict(() => this.usage - bytes).finally(() => (this.scanning = undefined))
    await this.scanning
    // A deleted window's space is freed once its descriptor closes.
    this.handles.clear()
    return this.stats.evictedBytes - before
  }

  /** Scans the cache (recounting its usage), then evicts oldest first down to `target()` bytes. */
  private async scanAndEvict(target: () => number): Promise<void> {
    // Windows added from here on are counted in addedSinceScan; the listing skips them (and windows
    // still being written, counted in `writing`), so nothing is counted twice.
    const addedBefore = this.addedSinceScan
    const addedDuring = (this.addedDuringScan = new Set())
    try {
      const files = await this.scan(addedDuring)
      this.addedSinceScan -= addedBefore
      this.usage = files.reduce((n, f) => n + f.size, 0)
      const goal = target()
      if (this.usage <= goal) return
      files.sort((a, b) => a.mtime - b.mtime)
      for (const f of files) {
        if (this.usage <= goal) break
        await fsp.rm(f.file, { force: true })
        this.usage -= f.size
        this.stats.evictedBytes += f.size
      }
    } finally {
      this.addedDuringScan = undefined
    }
  }

  /** The cached windows on disk, less those added during the scan and those being written. */
  private async scan(addedDuring: Set<string>): Promise<{ file: string; size: number; mtime: number }[]> {
    const files: { file: string; size: number; mtime: number }[] = []
    let subdirs: string[] = []
    try {
      subdirs = await fsp.readdir(this.dir)
    } catch {
      return files
    }
    for (const sub of subdirs) {
      let names: string[] = []
      try {
        names = await fsp.readdir(path.join(this.dir, sub))
      } catch {
        continue
      }
      for (const name of names) {
        const file = path.join(this.dir, sub, name)
        if (addedDuring.has(file) || this.writingFiles.has(file)) continue
        const st = await fsp.stat(file).catch(() => undefined)
        if (!st?.isFile()) continue
        files.push({ file, size: st.size, mtime: st.mtimeMs })
      }
    }
    return files
  }

  /** Drops every cached window (the benchmark's "cold from the bucket"). */
  async clear(): Promise<void> {
    this.handles.clear()
    await fsp.rm(this.dir, { recursive: true, force: true })
    this.usage = 0
    this.addedSinceScan = 0
  }
}

/** Up to `len` bytes at `start` (fewer at the end of the file), read on the thread pool. */
async function readAt(fd: number, start: number, len: number): Promise<Buffer> {
  const buf = Buffer.allocUnsafe(len)
  let done = 0
  while (done < len) {
    const bytesRead = await new Promise<number>((resolve, reject) => fs.read(fd, buf, done, len - done, start + done, (err, n) => (err ? reject(err) : resolve(n))))
    if (bytesRead === 0) break
    done += bytesRead
  }
  return buf.subarray(0, done)
}

/** readAt on the calling thread. */
function readAtSync(fd: number, start: number, len: number): Buffer {
  const buf = Buffer.allocUnsafe(len)
  let done = 0
  while (done < len) {
    const bytesRead = fs.readSync(fd, buf, done, len - done, start + done)
    if (bytesRead === 0) break
    done += bytesRead
  }
  return buf.subarray(0, done)
}

/** The bytes [from, to) of a body in parts, as views of those parts. */
function sliceParts(parts: Buffer[], from: number, to: number): Buffer[] {
  const out: Buffer[] = []
  let at = 0
  for (const part of parts) {
    const start = Math.max(from, at)
    const end = Math.min(to, at + part.length)
    if (start < end) out.push(part.subarray(start - at, end - at))
    at += part.length
    if (at >= to) break
  }
  return out
}
