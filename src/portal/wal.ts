import fs, { promises as fsp } from 'node:fs'
import path from 'node:path'
import { LRUCache } from 'lru-cache'
import { SEAL_OVERHEAD, type RepoKeys } from '../crypto/index.js'
import { freeBuffer } from '../util/native.js'
import { readU64, writeU64 } from '../util/u64.js'

/**
 * The write-ahead log of one volume on the local disk (the portal). Every
 * change since the last commit is a record here before it is acknowledged;
 * `sync()` makes records durable with one fdatasync shared by everyone
 * waiting (group commit).
 *
 * Records appended in the same turn of the event loop are written with one
 * syscall, on the libuv thread pool: a write into the page cache may block
 * for tens of milliseconds while the kernel throttles a disk busy with
 * writeback, and on the event loop every FUSE request waited meanwhile. One
 * write is in flight at a time, so frames land in sequence order; what
 * queues behind it is bounded (see `room`).
 *
 * Records that are never read back (metadata) are sealed together as one
 * frame: small records would otherwise pay more for encryption set-up than
 * for their bytes. A record that may be read back (written file data) is a
 * frame of its own, so reading it decrypts only its bytes: the pieces of a
 * file written at random sit all over the log, and when they shared frames a
 * flush decrypted a whole frame per 4 KiB piece (25 s to store 128 MiB after
 * 20 s of fio random writes; measured in docs/performance.md). Frames stay
 * in sequence order, so what recovery keeps is always a prefix of the log.
 * A frame's associated data names its volume, file and offset, so a torn,
 * damaged or moved frame fails to open; recovery keeps every frame before
 * the first bad one and drops the rest — nothing acknowledged as synced is
 * ever after it.
 *
 *   file:  "S0FSWAL1" | u32 length | sealed header | frame…
 *   frame: u32 length | sealed( (u64 seq | u8 kind | u32 length | payload)… )
 */

const MAGIC = Buffer.from('S0FSWAL1')
const ROTATE_BYTES = 64 * 1024 * 1024
/**
 * Queued records are written BATCH_DELAY_MS after the first, or, once this
 * much is queued, at the end of the event loop's turn (after the replies to
 * the requests that wrote them: a crash loses only what was never synced)...
 */
const FRAME_BYTES = 1024 * 1024
/** ...or at once, when this much is queued (or as soon as the write in flight is done). */
const MAX_QUEUED_BYTES = 8 * 1024 * 1024
/**
 * Writers wait (`room`) while this much is queued or being written. (At
 * twice this, fio's random writes through the writeback cache peaked at 170
 * MiB against 130.)
 */
const MAX_UNWRITTEN_BYTES = MAX_QUEUED_BYTES
const RECORD_HEADER = 13
/**
 * One write takes queued records up to this many sealed bytes, so that it
 * is sealed into one reused buffer (see frameBuffer): two 1 MiB WRITEs'
 * records with their overheads fit. Only a larger single record gets a
 * buffer of its own.
 */
const FRAME_SCRATCH = 2 * 1024 * 1024 + 64 * 1024
/**
 * Records wait this long to share a frame. Durability is unaffected (fsync
 * writes at once); a crash loses at most what was never synced anyway.
 */
const BATCH_DELAY_MS = 2
/** readEach reads frames this close together with one pread (the bytes between are read and skipped)... */
const RUN_GAP = 16 * 1024
/** ...up to this many bytes per pread. */
const RUN_BYTES = 1024 * 1024
/** readEach's reused buffer: a run, or one frame a little over RUN_BYTES (a 1 MiB WRITE's record and its overheads). */
const RUN_SCRATCH = RUN_BYTES + 64 * 1024

export interface WalHeader {
  volumeId: string
  session: string
  /** The head generation this session started from. */
  baseGeneration: number
  fileNo: number
  created: string
}

export interface WalLocation {
  file: number
  seq: number
}

export interface WalRecord {
  seq: number
  kind: number
  payload: Buffer
  loc: WalLocation
}

export interface WalStats {
  files: number
  bytes: number
  frames: number
  syncs: number
  records: number
  /** Frames read back from disk and decrypted (for records no longer in memory). */
  framesRead: number
  /** Their sealed bytes. */
  frameBytesRead: number
  /** Reads of the disk they took. */
  preads: number
}

/** Where a frame sits in the log: file number, offset of its length prefix, sealed length. */
interface FrameAt {
  file: number
  pos: number
  len: number
}

/** Approximate heap bytes an entry of the read-back cache costs beyond its payload. */
const RECENT_ENTRY_OVERHEAD = 200

export class WalCorruptError extends Error {
  constructor(message: string) {
    super(message)
    this.name = 'WalCorruptError'
  }
}

interface OpenFile {
  no: number
  fd: number
  /** Bytes written (a write in flight is counted when it is done). */
  size: number
  /** The last record written or being written into this file. */
  maxSeq: number
}

/** The one write in flight: a batch sealed into frames at the end of its file. */
interface InFlight {
  file: OpenFile
  batch: Pending[]
  /** The batch's record bytes (as counted in batchBytes). */
  bytes: number
  /** Settles when the write is done, well or not (an error is left in Wal.failed or Wal.stall). */
  done: Promise<void>
}

interface Pending {
  seq: number
  kind: number
  payload: Buffer
  /** A record that may be read back: sealed as a frame of its own. */
  alone: boolean
}

function fileName(no: number): string {
  return `${String(no).padStart(10, '0')}.wal`
}

function frameAad(volumeId: string, file: number, pos: number): string {
  return `wal:${volumeId}:${file}:${pos}`
}

function headerAad(volumeId: string, file: number): string {
  return `walheader:${volumeId}:${file}`
}

export class Wal {
  readonly stats: WalStats = { files: 0, bytes: 0, frames: 0, syncs: 0, records: 0, framesRead: 0, frameBytesRead: 0, preads: 0 }
  private current!: OpenFile
  /** Files rotated away from (the same objects, so a write in flight when one was closed still updates it). */
  private readonly closedFiles = new Map<number, { size: number; maxSeq: number }>()
  private batch: Pending[] = []
  private batchBytes = 0
  private writing?: InFlight
  /** Every record up to this one is written (in the page cache). */
  private writtenSeq = 0
  /** Records queued or being written (not yet in the page cache), by sequence number. */
  private readonly unwrittenRecords = new Map<number, Pending>()
  /** Writers waiting in room() for the queue to shrink. */
  private roomWaiters: Array<() => void> = []
  private flushScheduled = false
  private writeImmediate = false
  /** Where each record that may be read back (written bytes) sits: seq → frame offset. */
  private readonly frameOf = new Map<number, FrameAt>()
  /** Read descriptors of log files, opened on first read-back and kept until the file is dropped. */
  private readonly readers = new Map<number, number>()
  /** Payloads of recent and not-yet-written records, so reads of fresh data stay in memory. */
  private readonly recent = new LRUCache<number, Buffer>({
    // Small on purpose: a miss costs one pread of a file the kernel just cached.
    maxSize: 4 * 1024 * 1024,
    // A small payload costs far more than its length: the Buffer object and the cache's own entry.
    sizeCalculation: (b) => b.length + RECENT_ENTRY_OVERHEAD,
    // Out of the cache and already written: nothing reads this payload again (see append).
    dispose: (payload, seq) => {
      if (this.frameOf.has(seq)) freeBuffer(payload)
    },
  })
  private syncing?: Promise<void>
  private failed?: Error
  /** The disk-full error while records wait in memory to be written. */
  private stall?: Error
  private closed = false
  private frameScratch?: Buffer
  private runScratch?: Buffer
  seq = 0

  private constructor(
    readonly dir: string,
    private readonly keys: RepoKeys,
    readonly header: Omit<WalHeader, 'fileNo' | 'created'>,
  ) {}

  /** Starts a new log for a writer session. */
  static async create(dir: string, keys: RepoKeys, header: Omit<WalHeader, 'fileNo' | 'created'>, startSeq = 0): Promise<Wal> {
    await fsp.mkdir(dir, { recursive: true, mode: 0o700 })
    const wal = new Wal(dir, keys, header)
    wal.seq = wal.writtenSeq = startSeq
    wal.openFile(1)
    return wal
  }

  /** Continues a recovered log in the same session: a new file after the existing ones; sequence numbers carry on. */
  static async resume(dir: string, keys: RepoKeys, recovered: { header: WalHeader; records: WalRecord[]; frames: Map<number, FrameAt> }, minSeq = 0): Promise<Wal> {
    const { header } = recovered
    const wal = new Wal(dir, keys, { volumeId: header.volumeId, session: header.session, baseGeneration: header.baseGeneration })
    let lastFile = 0
    for (const name of (await fsp.readdir(dir)).filter((n) => n.endsWith('.wal'))) {
      const no = Number(name.slice(0, -'.wal'.length))
      wal.closedFiles.set(no, { size: (await fsp.stat(path.join(dir, name))).size, maxSeq: 0 })
      lastFile = Math.max(lastFile, no)
    }
    for (const r of recovered.records) {
      const f = wal.closedFiles.get(r.loc.file)
      if (f && r.seq > f.maxSeq) f.maxSeq = r.seq
      if (r.seq > wal.seq) wal.seq = r.seq
      wal.frameOf.set(r.seq, recovered.frames.get(r.seq)!)
    }
    // Files already dropped after a commit held records up to the committed position.
    if (minSeq > wal.seq) wal.seq = minSeq
    wal.writtenSeq = wal.seq
    wal.openFile(lastFile + 1)
    return wal
  }

  /** Reads every intact record of an existing log; a torn or damaged tail is truncated away. */
  static async recover(
    dir: string,
    keys: RepoKeys,
    volumeId: string,
  ): Promise<{ header: WalHeader; records: WalRecord[]; frames: Map<number, FrameAt>; tornBytes: number } | undefined> {
    let names: string[]
    try {
      names = (await fsp.readdir(dir)).filter((n) => n.endsWith('.wal')).sort()
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined
      throw err
    }
    let header: WalHeader | undefined
    const records: WalRecord[] = []
    const frames = new Map<number, FrameAt>()
    let tornBytes = 0
    for (let i = 0; i < names.length; i++) {
      const file = path.join(dir, names[i])
      const fileNo = Number(names[i].slice(0, -'.wal'.length))
      const data = await fsp.readFile(file)
      const parsed = parseFile(keys, data, volumeId, fileNo, records, frames)
      if (!parsed.header) {
        // A file whose header never reached the disk: nothing in it was acknowledged.
        tornBytes += data.length
        await fsp.rm(file)
        continue
      }
      header ??= parsed.header
      if (parsed.header.session !== header.session) throw new WalCorruptError(`log file ${file} belongs to another session`)
      if (parsed.end < data.length) {
        tornBytes += data.length - parsed.end
        await fsp.truncate(file, parsed.end)
        // Nothing after a torn frame can have been synced.
        for (const later of names.slice(i + 1)) {
          tornBytes += (await fsp.stat(path.join(dir, later))).size
          await fsp.rm(path.join(dir, later))
        }
        break
      }
    }
    if (!header) return undefined
    return { header, records, frames, tornBytes }
  }

  get currentFile(): number {
    return this.current.no
  }

  /** Total bytes of log files on disk (for the portal's cap). */
  get diskBytes(): number {
    let n = this.current.size + this.batchBytes + (this.writing?.bytes ?? 0)
    for (const f of this.closedFiles.values()) n += f.size
    return n
  }

  /**
   * Queues a record; it is readable at once and durable after the next
   * `sync()`. A read-back record's payload becomes the log's: it is freed
   * (detached) once written and out of the read-back cache, so the caller
   * must not use it after. Written data passes through here at up to a few
   * hundred MiB/s, and left to V8 the payloads were freed only at its next
   * collection, every 64 MiB of them.
   */
  append(kind: number, payload: Buffer, readBack = false): WalLocation {
    if (this.failed) throw this.failed
    const seq = ++this.seq
    const record = { seq, kind, payload, alone: readBack }
    this.batch.push(record)
    this.unwrittenRecords.set(seq, record)
    this.batchBytes += RECORD_HEADER + payload.length
    this.stats.records++
    if (readBack) this.recent.set(seq, payload)
    const loc = { file: this.current.no, seq }
    if (this.batchBytes >= MAX_QUEUED_BYTES) this.startWrite()
    else if (this.batchBytes >= FRAME_BYTES) this.writeSoon()
    else this.scheduleWrite(BATCH_DELAY_MS)
    return loc
  }

  /**
   * Resolves once the log has room for more records: at once unless
   * MAX_UNWRITTEN_BYTES wait in memory behind a slow disk. Writers of file
   * data await it before they append, so a fast writer is held back to the
   * disk's pace instead of filling the daemon's memory. (Not while the disk
   * is full: the portal's admission answers those writers ENOSPC.)
   */
  room(): Promise<void> | undefined {
    if (this.unwrittenBytes < MAX_UNWRITTEN_BYTES || this.failed || this.stall || this.closed) return undefined
    return new Promise((resolve) => this.roomWaiters.push(resolve))
  }

  private get unwrittenBytes(): number {
    return this.batchBytes + (this.writing?.bytes ?? 0)
  }

  /** The payload of a record. */
  async read(loc: WalLocation): Promise<Buffer> {
    let payload!: Buffer
    await this.readEach([loc], (_, found) => (payload = Buffer.from(found)))
    return payload
  }

  /**
   * Hands `visit` the payload of each record (with its index in `locs`), in
   * no particular order; a payload is valid only during its call, so what is
   * held at once stays one read's worth. Frames near each other on disk are
   * read with one pread: a flush reads back thousands of 4 KiB records,
   * mostly in a row in the log, and a syscall each was most of the cost
   * (this VM).
   */
  async readEach(locs: WalLocation[], visit: (index: number, payload: Buffer) => void): Promise<void> {
    const wanted: { i: number; seq: number; at: FrameAt }[] = []
    for (let i = 0; i < locs.length; i++) {
      const seq = locs[i].seq
      const at = this.frameOf.get(seq)
      // Recent records are in memory; records not yet written are still in the queue.
      const inMemory = this.recent.get(seq) ?? (at ? undefined : this.unwrittenRecords.get(seq)?.payload)
      if (inMemory) visit(i, inMemory)
      else if (at) wanted.push({ i, seq, at })
      else throw new WalCorruptError(`log record ${seq} is not in the log`)
    }
    wanted.sort((a, b) => a.at.file - b.at.file || a.at.pos - b.at.pos)
    for (let k = 0; k < wanted.length; ) {
      // A run: frames of one file at most RUN_GAP apart, at most RUN_BYTES in all (or one larger frame).
      const first = wanted[k].at
      let end = first.pos + 4 + first.len
      let j = k + 1
      for (; j < wanted.length; j++) {
        const at = wanted[j].at
        if (at.file !== first.file || at.pos > end + RUN_GAP || at.pos + 4 + at.len - first.pos > RUN_BYTES) break
        end = Math.max(end, at.pos + 4 + at.len)
      }
      const run = this.runBuffer(end - first.pos)
      readFully(this.reader(first.file), run, first.pos)
      this.stats.preads++
      let frame: Map<number, Buffer> | undefined
      for (let prev: FrameAt | undefined; k < j; k++) {
        const { i, seq, at } = wanted[k]
        if (at !== prev) frame = this.openFrame(at, run.subarray(at.pos + 4 - first.pos, at.pos + 4 + at.len - first.pos))
        prev = at
        const payload = frame!.get(seq)
        if (!payload) throw new WalCorruptError(`log record ${seq} is missing from its frame`)
        visit(i, payload)
      }
      if (run.buffer !== this.runScratch?.buffer) freeBuffer(run)
    }
  }

  /** True while records wait in memory because the disk is full (they are written once space returns). */
  get stalled(): boolean {
    return this.stall !== undefined
  }

  /** Makes every record appended so far durable (one fdatasync for all concurrent callers). */
  async sync(): Promise<void> {
    await this.writeThrough(this.seq)
    const target = this.current
    // A sync already running may have started before our records were written: chain another.
    // (A rotation is in the chain too, so `target` is still open when our turn comes.)
    await this.chainSync(() => fdatasync(target.fd).then(() => void this.stats.syncs++))
    if (this.failed) throw this.failed
  }

  /** Runs `step` after every sync and rotation already queued; later ones wait for it. */
  private chainSync(step: () => Promise<void>): Promise<void> {
    const previous = this.syncing
    const mine: Promise<void> = (async () => {
      await previous?.catch(() => undefined)
      await step()
    })()
    this.syncing = mine
    const clear = () => {
      if (this.syncing === mine) this.syncing = undefined
    }
    mine.then(clear, clear)
    return mine
  }

  /**
   * Starts a new file; later records go there. The old file is synced and
   * closed in the sync chain: after the syncs already waiting on it (closing
   * it at once failed them with EBADF — or, had its number been reused, would
   * have synced another file), and before any later sync returns, since the
   * old file's records must be durable before anything depends on the new one.
   */
  rotate(): void {
    this.startWrite()
    const old = this.current
    // A write in flight into the old file finishes there (and updates this same object).
    const inFlight = this.writing?.file === old ? this.writing.done : undefined
    this.closedFiles.set(old.no, old)
    this.openFile(old.no + 1)
    this.chainSync(async () => {
      try {
        await inFlight
        await fdatasync(old.fd)
      } catch (err) {
        // Records in it may not be durable: nothing later may be acknowledged.
        this.failed ??= err as Error
      } finally {
        fs.close(old.fd, () => undefined)
      }
    }).catch(() => undefined)
  }

  /** Deletes log files whose every record is at or below `seq` and that `inUse` does not name. */
  async dropThrough(seq: number, inUse: (file: number) => boolean): Promise<number> {
    let freed = 0
    const dropped = new Set<number>()
    for (const [no, info] of [...this.closedFiles]) {
      if (info.maxSeq > seq || inUse(no) || this.writing?.file.no === no) continue
      this.closedFiles.delete(no)
      this.closeReader(no)
      await fsp.rm(path.join(this.dir, fileName(no)), { force: true })
      freed += info.size
      dropped.add(no)
    }
    if (dropped.size) {
      for (const [s, where] of this.frameOf) {
        if (!dropped.has(where.file)) continue
        this.frameOf.delete(s)
        this.recent.delete(s)
      }
    }
    return freed
  }

  async close(): Promise<void> {
    if (this.closed) return
    await this.writeThrough(this.seq)
    await this.syncing?.catch(() => undefined)
    this.closed = true
    await this.writing?.done // one started meanwhile
    this.releaseRoom()
    this.closeReaders()
    try {
      fs.fdatasyncSync(this.current.fd)
    } catch {
      // best effort: a failed log already reported itself
    }
    fs.closeSync(this.current.fd)
  }

  /** Closes the files without writing what is still queued: what a crash leaves behind (tests). */
  async abandon(): Promise<void> {
    this.batch = []
    this.batchBytes = 0
    this.unwrittenRecords.clear()
    this.closed = true
    this.releaseRoom()
    await this.writing?.done
    await this.syncing?.catch(() => undefined)
    this.closeReaders()
    fs.closeSync(this.current.fd)
  }

  /** Removes the whole log directory (after a commit made it redundant). */
  async destroy(): Promise<void> {
    await this.close()
    await fsp.rm(this.dir, { recursive: true, force: true })
  }

  private openFile(no: number): void {
    const fd = fs.openSync(path.join(this.dir, fileName(no)), 'w', 0o600)
    const header: WalHeader = { ...this.header, fileNo: no, created: new Date().toISOString() }
    const sealed = this.keys.seal('cache', Buffer.from(JSON.stringify(header)), headerAad(this.header.volumeId, no))
    const len = Buffer.allocUnsafe(4)
    len.writeUInt32LE(sealed.length, 0)
    const bytes = Buffer.concat([MAGIC, len, sealed])
    fs.writeSync(fd, bytes, 0, bytes.length, 0)
    this.current = { no, fd, size: bytes.length, maxSeq: this.seq }
    this.stats.files++
  }

  /**
   * Writes everything appended up to `seq` (waiting for the write in flight
   * and starting the next), or throws why it cannot: the log failed, or the
   * disk is full (the records then wait in memory for space).
   */
  private async writeThrough(seq: number): Promise<void> {
    while (this.writtenSeq < seq) {
      if (this.failed) throw this.failed
      this.startWrite() // (after a full disk, a retry)
      if (!this.writing) break // closed
      await this.writing.done
      if (this.stall) throw this.stall
    }
    if (this.failed) throw this.failed
  }

  /**
   * Seals the queued records into frames (a run of metadata records shares
   * one; a read-back record has its own) and starts writing them at the end
   * of the current file with one syscall on the thread pool, unless a write
   * is in flight already: when that one is done, it starts the next.
   */
  private startWrite(): void {
    if (this.batch.length === 0 || this.closed || this.writing) return
    const { runs, sizes, count, bytes } = this.nextWrite()
    const batch = this.batch.splice(0, count)
    this.batchBytes -= bytes
    const file = this.current
    const out = this.frameBuffer(sizes.reduce((n, size) => n + 4 + size, 0))
    const placed: Array<{ records: Pending[]; at: FrameAt }> = []
    let pos = file.size
    let used = 0
    for (let k = 0; k < runs.length; k++) {
      const parts: Buffer[] = []
      for (const r of runs[k]) {
        const h = Buffer.allocUnsafe(RECORD_HEADER)
        writeU64(h, 0, r.seq)
        h[8] = r.kind
        h.writeUInt32LE(r.payload.length, 9)
        parts.push(h, r.payload)
      }
      out.writeUInt32LE(sizes[k], used)
      this.keys.seal('cache', parts, frameAad(this.header.volumeId, file.no, pos), out.subarray(used + 4, used + 4 + sizes[k]))
      placed.push({ records: runs[k], at: { file: file.no, pos, len: sizes[k] } })
      pos += 4 + sizes[k]
      used += 4 + sizes[k]
    }
    file.maxSeq = batch[batch.length - 1].seq
    const done = writeFully(file.fd, out.subarray(0, used), file.size)
      .then(
        () => this.written(file, batch, placed, pos),
        (err: NodeJS.ErrnoException) => this.writeFailed(batch, bytes, err),
      )
      .catch((err: Error) => {
        // The rotation after it could not start the next file: nothing later may be acknowledged.
        this.failed ??= err
      })
    this.writing = {
      file,
      batch,
      bytes,
      done: done.finally(() => {
        // Written, or to be sealed again from the records: a record larger than the scratch had a buffer
        // of its own, freed now. (Left to V8, such buffers piled up over 2 GiB in 20 s of fio's random
        // writes through the kernel's writeback cache, when batches of up to 8 MiB each had one.)
        if (out !== this.frameScratch) freeBuffer(out)
        this.writing = undefined
        if (this.stall === undefined) this.startWrite()
        if (this.unwrittenBytes < MAX_UNWRITTEN_BYTES) this.releaseRoom()
      }),
    }
  }

  /**
   * The queued records the next write takes — at least one, and up to
   * FRAME_SCRATCH sealed bytes — grouped into frames: a read-back record is a
   * frame of its own, a run of metadata records shares one. Returns the
   * frames' records and sealed sizes, how many records that is, and their
   * record bytes (as counted in batchBytes).
   */
  private nextWrite(): { runs: Pending[][]; sizes: number[]; count: number; bytes: number } {
    const runs: Pending[][] = []
    const sizes: number[] = []
    let count = 0
    let bytes = 0
    let sealed = 0
    for (const r of this.batch) {
      const size = RECORD_HEADER + r.payload.length
      const opensFrame = r.alone || count === 0 || this.batch[count - 1].alone
      const more = size + (opensFrame ? 4 + SEAL_OVERHEAD : 0)
      if (count > 0 && sealed + more > FRAME_SCRATCH) break
      if (opensFrame) {
        runs.push([])
        sizes.push(SEAL_OVERHEAD)
      }
      runs[runs.length - 1].push(r)
      sizes[sizes.length - 1] += size
      count++
      bytes += size
      sealed += more
    }
    return { runs, sizes, count, bytes }
  }

  /** A write is done: its records are in the page cache, where readEach finds them from now on. */
  private written(file: OpenFile, batch: Pending[], placed: Array<{ records: Pending[]; at: FrameAt }>, end: number): void {
    this.stall = undefined
    const start = file.size
    file.size = end
    this.writtenSeq = batch[batch.length - 1].seq
    for (const { records, at } of placed) for (const r of records) this.frameOf.set(r.seq, at)
    for (const r of batch) this.unwrittenRecords.delete(r.seq)
    // Written, and already out of the read-back cache (a large write passes it by): nothing reads them again.
    for (const r of batch) if (r.alone && !this.recent.has(r.seq)) freeBuffer(r.payload)
    this.stats.frames += placed.length
    this.stats.bytes += end - start
    if (file === this.current && file.size >= ROTATE_BYTES && !this.closed) this.rotate()
  }

  private writeFailed(batch: Pending[], bytes: number, err: NodeJS.ErrnoException): void {
    if (err.code === 'ENOSPC' && !this.closed) {
      // Disk full: keep the records (already acknowledged) in memory, ahead of those queued since, and
      // try again later. The partial frames at the end of the file are overwritten by the retry.
      this.batch = batch.concat(this.batch)
      this.batchBytes += bytes
      this.stall = err
      this.scheduleWrite(1000)
      this.releaseRoom()
      return
    }
    // Any other write error poisons the log: nothing later may be acknowledged.
    this.failed ??= err
    this.releaseRoom()
  }

  private releaseRoom(): void {
    const waiters = this.roomWaiters
    this.roomWaiters = []
    for (const wake of waiters) wake()
  }

  /**
   * Where readEach reads a run of frames (and decrypts them in place). A
   * flush reads back everything it stores, tens of MiB at a time; with a new
   * buffer per run, that much garbage piled up before V8 collected it (it
   * counts memory outside its heap only every 64 MiB), and the daemon's
   * resident set grew by as much during every large flush. One buffer is
   * enough: readEach does not await between reading a run and visiting its
   * records, and visitors keep nothing. A larger frame gets a buffer of its
   * own, freed once visited.
   */
  private runBuffer(bytes: number): Buffer {
    if (bytes > RUN_SCRATCH) return Buffer.allocUnsafe(bytes)
    this.runScratch ??= Buffer.allocUnsafeSlow(RUN_SCRATCH)
    return this.runScratch.subarray(0, bytes)
  }

  /**
   * Where startWrite seals its frames: needed only until that write is done,
   * and one write is in flight at a time, so one buffer serves every write
   * (see FRAME_SCRATCH) instead of a new one per write.
   */
  private frameBuffer(bytes: number): Buffer {
    if (bytes > FRAME_SCRATCH) return Buffer.allocUnsafe(bytes)
    this.frameScratch ??= Buffer.allocUnsafeSlow(FRAME_SCRATCH)
    return this.frameScratch
  }

  /**
   * Writes the queue once this turn's replies are out (setImmediate runs after
   * the microtasks that answer the requests): a 1 MiB WRITE is answered before
   * its seal, and the writer prepares its next request meanwhile.
   */
  private writeSoon(): void {
    if (this.writeImmediate) return
    this.writeImmediate = true
    setImmediate(() => {
      this.writeImmediate = false
      this.startWrite()
    })
  }

  private scheduleWrite(delayMs: number): void {
    // (A pending timer is kept: its delay is short, and a full frame is written at the end of the turn anyway.)
    if (this.flushScheduled) return
    this.flushScheduled = true
    const run = () => {
      this.flushScheduled = false
      this.startWrite()
    }
    setTimeout(run, delayMs).unref()
  }

  /**
   * Opens one frame read back from disk, decrypting over `sealed` (the
   * caller's own buffer, from its pread). Frames are read synchronously: the
   * log was written moments ago and is in the page cache, where a pread costs
   * a few microseconds — through the thread pool, each read cost a thread
   * wake-up on the main thread (17% of it under fio's random writes, this VM).
   */
  private openFrame(at: FrameAt, sealed: Buffer): Map<number, Buffer> {
    this.stats.framesRead++
    this.stats.frameBytesRead += at.len
    return splitFrame(this.keys.open('cache', sealed, frameAad(this.header.volumeId, at.file, at.pos), `log frame ${at.file}:${at.pos}`, true))
  }

  /** A read descriptor of a log file, opened on first read-back and kept until the file is dropped. */
  private reader(no: number): number {
    let fd = this.readers.get(no)
    if (fd === undefined) {
      fd = fs.openSync(path.join(this.dir, fileName(no)), 'r')
      this.readers.set(no, fd)
    }
    return fd
  }

  private closeReader(no: number): void {
    const fd = this.readers.get(no)
    if (fd === undefined) return
    this.readers.delete(no)
    fs.closeSync(fd)
  }

  private closeReaders(): void {
    for (const no of [...this.readers.keys()]) this.closeReader(no)
  }
}

function fdatasync(fd: number): Promise<void> {
  return new Promise((resolve, reject) => fs.fdatasync(fd, (err) => (err ? reject(err) : resolve())))
}

/** Writes all of `buf` at `pos` on the thread pool (a write may write less than asked). */
async function writeFully(fd: number, buf: Buffer, pos: number): Promise<void> {
  let done = 0
  while (done < buf.length) {
    const n = await new Promise<number>((resolve, reject) => fs.write(fd, buf, done, buf.length - done, pos + done, (err, written) => (err ? reject(err) : resolve(written))))
    done += n
  }
}

function readFully(fd: number, buf: Buffer, pos: number): void {
  let done = 0
  while (done < buf.length) {
    const n = fs.readSync(fd, buf, done, buf.length - done, pos + done)
    if (n === 0) throw new WalCorruptError(`log ends early at ${pos + done}`)
    done += n
  }
}

/** The records of a frame's plaintext, by sequence number. */
function splitFrame(plain: Buffer): Map<number, Buffer> {
  const out = new Map<number, Buffer>()
  for (const r of frameRecords(plain)) out.set(r.seq, r.payload)
  return out
}

function* frameRecords(plain: Buffer): Generator<{ seq: number; kind: number; payload: Buffer }> {
  let at = 0
  while (at + RECORD_HEADER <= plain.length) {
    const seq = readU64(plain, at)
    const kind = plain[at + 8]
    const len = plain.readUInt32LE(at + 9)
    if (at + RECORD_HEADER + len > plain.length) throw new WalCorruptError('frame record overruns its frame')
    yield { seq, kind, payload: plain.subarray(at + RECORD_HEADER, at + RECORD_HEADER + len) }
    at += RECORD_HEADER + len
  }
}

function parseFile(
  keys: RepoKeys,
  data: Buffer,
  volumeId: string,
  fileNo: number,
  records: WalRecord[],
  frames: Map<number, FrameAt>,
): { header?: WalHeader; end: number } {
  if (data.length < MAGIC.length + 4 || !data.subarray(0, MAGIC.length).equals(MAGIC)) return { end: 0 }
  const headerLen = data.readUInt32LE(MAGIC.length)
  const headerEnd = MAGIC.length + 4 + headerLen
  if (headerEnd > data.length) return { end: 0 }
  let header: WalHeader
  try {
    header = JSON.parse(keys.open('cache', data.subarray(MAGIC.length + 4, headerEnd), headerAad(volumeId, fileNo)).toString('utf8'))
  } catch {
    return { end: 0 }
  }
  let pos = headerEnd
  while (pos + 4 <= data.length) {
    const len = data.readUInt32LE(pos)
    if (pos + 4 + len > data.length) break
    let plain: Buffer
    try {
      plain = keys.open('cache', data.subarray(pos + 4, pos + 4 + len), frameAad(volumeId, fileNo, pos))
    } catch {
      break
    }
    const at: FrameAt = { file: fileNo, pos, len }
    for (const r of frameRecords(plain)) {
      records.push({ seq: r.seq, kind: r.kind, payload: r.payload, loc: { file: fileNo, seq: r.seq } })
      frames.set(r.seq, at)
    }
    pos += 4 + len
  }
  return { header, end: pos }
}
