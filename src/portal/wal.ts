import { promises as fsp } from 'node:fs'
import path from 'node:path'
import type { RepoKeys } from '../crypto/index.js'

/**
 * The write-ahead log of one volume on the local disk (the portal). Every
 * change since the last commit is a record here before it is acknowledged;
 * `sync()` makes records durable with one fdatasync shared by everyone
 * waiting (group commit). Records are sealed with the cache key and bound to
 * their volume, file and sequence number, so a torn or damaged tail fails to
 * open and is dropped at recovery, and nothing before it is lost.
 *
 * File layout: "S0FSWAL1" | u32 header length | sealed header | frames…
 * Frame: u32 sealed length | sealed(u64 seq | u8 kind | payload).
 */

const MAGIC = Buffer.from('S0FSWAL1')
const ROTATE_BYTES = 64 * 1024 * 1024
/** Appends are written to the file once this many bytes are buffered (or at the next sync/tick). */
const WRITE_BATCH_BYTES = 1024 * 1024

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
  /** Offset of the frame in its file. */
  pos: number
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
  syncs: number
  records: number
}

interface OpenFile {
  no: number
  handle: fsp.FileHandle
  /** Bytes written or queued. */
  size: number
  /** Bytes on disk (written, maybe not synced). */
  written: number
  maxSeq: number
}

export class WalCorruptError extends Error {
  constructor(message: string) {
    super(message)
    this.name = 'WalCorruptError'
  }
}

function fileName(no: number): string {
  return `${String(no).padStart(10, '0')}.wal`
}

function aad(volumeId: string, file: number): string {
  return `wal:${volumeId}:${file}`
}

export class Wal {
  readonly stats: WalStats = { files: 0, bytes: 0, syncs: 0, records: 0 }
  private current!: OpenFile
  private readonly closedFiles = new Map<number, { size: number; maxSeq: number }>()
  private queue: Buffer[] = []
  private queuedBytes = 0
  /** Plaintext payloads of records not yet on disk, so reads never wait for the writer. */
  private readonly unwritten = new Map<number, Buffer>()
  private writing: Promise<void> = Promise.resolve()
  private syncing?: Promise<void>
  private syncAgain = false
  private tickScheduled = false
  private readers = new Map<number, fsp.FileHandle>()
  private failed?: Error
  seq = 0

  private constructor(
    readonly dir: string,
    private readonly keys: RepoKeys,
    readonly header: Omit<WalHeader, 'fileNo' | 'created'>,
  ) {}

  /** Starts a new log for a writer session in an empty (or fresh) directory. */
  static async create(dir: string, keys: RepoKeys, header: Omit<WalHeader, 'fileNo' | 'created'>, startSeq = 0): Promise<Wal> {
    await fsp.mkdir(dir, { recursive: true, mode: 0o700 })
    const wal = new Wal(dir, keys, header)
    wal.seq = startSeq
    await wal.openFile(1)
    return wal
  }

  /**
   * Continues a recovered log in the same session: appends go to a new file
   * after the existing ones, sequence numbers carry on.
   */
  static async resume(dir: string, keys: RepoKeys, recovered: { header: WalHeader; records: WalRecord[] }, minSeq = 0): Promise<Wal> {
    const { header } = recovered
    const wal = new Wal(dir, keys, { volumeId: header.volumeId, session: header.session, baseGeneration: header.baseGeneration })
    let lastFile = 0
    for (const name of (await fsp.readdir(dir)).filter((n) => n.endsWith('.wal'))) {
      const no = Number(name.slice(0, -'.wal'.length))
      const size = (await fsp.stat(path.join(dir, name))).size
      wal.closedFiles.set(no, { size, maxSeq: 0 })
      lastFile = Math.max(lastFile, no)
    }
    for (const r of recovered.records) {
      const f = wal.closedFiles.get(r.loc.file)
      if (f && r.seq > f.maxSeq) f.maxSeq = r.seq
      if (r.seq > wal.seq) wal.seq = r.seq
    }
    // Files already dropped after a commit held records up to the committed position.
    if (minSeq > wal.seq) wal.seq = minSeq
    await wal.openFile(lastFile + 1)
    return wal
  }

  /** Reads every intact record of an existing log, dropping a torn tail (and truncating it away). */
  static async recover(dir: string, keys: RepoKeys, volumeId: string): Promise<{ header: WalHeader; records: WalRecord[]; tornBytes: number } | undefined> {
    let names: string[]
    try {
      names = (await fsp.readdir(dir)).filter((n) => n.endsWith('.wal')).sort()
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined
      throw err
    }
    if (names.length === 0) return undefined
    let header: WalHeader | undefined
    const records: WalRecord[] = []
    let tornBytes = 0
    for (let i = 0; i < names.length; i++) {
      const file = path.join(dir, names[i])
      const data = await fsp.readFile(file)
      const parsed = parseFile(keys, data, volumeId, Number(names[i].slice(0, -'.wal'.length)))
      if (!parsed.header) {
        // A file whose header never made it to disk: nothing in it was acknowledged.
        tornBytes += data.length
        await fsp.rm(file)
        continue
      }
      header ??= parsed.header
      if (parsed.header.volumeId !== volumeId || parsed.header.session !== header.session) {
        throw new WalCorruptError(`log file ${file} belongs to another volume or session`)
      }
      for (const r of parsed.records) records.push(r)
      if (parsed.end < data.length) {
        tornBytes += data.length - parsed.end
        await fsp.truncate(file, parsed.end)
        // Anything after a torn record cannot have been acknowledged after it.
        for (const later of names.slice(i + 1)) {
          tornBytes += (await fsp.stat(path.join(dir, later))).size
          await fsp.rm(path.join(dir, later))
        }
        break
      }
    }
    if (!header) return undefined
    return { header, records, tornBytes }
  }

  get currentFile(): number {
    return this.current.no
  }

  /** Total bytes of log files on disk (for the portal's cap). */
  get diskBytes(): number {
    let n = this.current.size
    for (const f of this.closedFiles.values()) n += f.size
    return n
  }

  /**
   * Queues a record; it is readable at once and durable after the next
   * `sync()`. Returns its sequence number and location.
   */
  append(kind: number, payload: Buffer): WalLocation {
    if (this.failed) throw this.failed
    const seq = ++this.seq
    const head = Buffer.allocUnsafe(9)
    head.writeBigUInt64LE(BigInt(seq), 0)
    head[8] = kind
    const sealed = this.keys.seal('cache', [head, payload], aad(this.header.volumeId, this.current.no))
    const frame = Buffer.allocUnsafe(4)
    frame.writeUInt32LE(sealed.length, 0)
    const loc: WalLocation = { file: this.current.no, pos: this.current.size, seq }
    this.queue.push(frame, sealed)
    this.queuedBytes += 4 + sealed.length
    this.current.size += 4 + sealed.length
    this.current.maxSeq = seq
    this.unwritten.set(seq, payload)
    this.stats.records++
    if (this.queuedBytes >= WRITE_BATCH_BYTES) this.writeQueued()
    else if (!this.tickScheduled) {
      this.tickScheduled = true
      setImmediate(() => {
        this.tickScheduled = false
        this.writeQueued()
      })
    }
    if (this.current.size >= ROTATE_BYTES) this.rotate()
    return loc
  }

  /** The payload of a record (from memory if it is not on disk yet). */
  async read(loc: WalLocation): Promise<Buffer> {
    const pending = this.unwritten.get(loc.seq)
    if (pending) return pending
    const handle = await this.reader(loc.file)
    const frame = Buffer.allocUnsafe(4)
    await readExactly(handle, frame, loc.pos)
    const sealed = Buffer.allocUnsafe(frame.readUInt32LE(0))
    await readExactly(handle, sealed, loc.pos + 4)
    const plain = this.keys.open('cache', sealed, aad(this.header.volumeId, loc.file), `log record ${loc.seq}`)
    if (Number(plain.readBigUInt64LE(0)) !== loc.seq) throw new WalCorruptError(`log record at ${loc.file}:${loc.pos} is not record ${loc.seq}`)
    return plain.subarray(9)
  }

  /** Makes every record appended so far durable (one fdatasync for all concurrent callers). */
  async sync(): Promise<void> {
    if (this.failed) throw this.failed
    if (this.syncing) {
      // A sync is running; records appended after it started need the next one.
      this.syncAgain = true
      await this.syncing.catch(() => undefined)
      return this.sync()
    }
    this.syncing = (async () => {
      this.writeQueued()
      await this.writing
      if (this.failed) throw this.failed
      await this.current.handle.datasync()
      this.stats.syncs++
    })()
    try {
      await this.syncing
    } finally {
      this.syncing = undefined
    }
  }

  /** Starts a new file; later records go there. */
  rotate(): void {
    const old = this.current
    this.writeQueued()
    this.closedFiles.set(old.no, { size: old.size, maxSeq: old.maxSeq })
    const next = old.no + 1
    // Open the next file synchronously in the write chain so appends can continue at once.
    this.current = { no: next, handle: undefined as unknown as fsp.FileHandle, size: 0, written: 0, maxSeq: this.seq }
    const headerBytes = this.headerBytes(next)
    this.current.size = headerBytes.length
    const current = this.current
    this.writing = this.writing.then(async () => {
      await old.handle.datasync().catch(() => undefined)
      await old.handle.close().catch(() => undefined)
      current.handle = await fsp.open(path.join(this.dir, fileName(next)), 'w', 0o600)
      await current.handle.write(headerBytes, 0, headerBytes.length, 0)
      current.written = headerBytes.length
    })
    this.writing.catch((err) => (this.failed ??= err))
    this.stats.files++
  }

  /** Deletes log files whose every record is at or below `seq` and that `inUse` does not name. */
  async dropThrough(seq: number, inUse: (file: number) => boolean): Promise<number> {
    let freed = 0
    for (const [no, info] of [...this.closedFiles]) {
      if (info.maxSeq > seq || inUse(no)) continue
      this.closedFiles.delete(no)
      const reader = this.readers.get(no)
      this.readers.delete(no)
      await reader?.close().catch(() => undefined)
      await fsp.rm(path.join(this.dir, fileName(no)), { force: true })
      freed += info.size
    }
    return freed
  }

  async close(): Promise<void> {
    this.writeQueued()
    await this.writing.catch(() => undefined)
    await this.current.handle?.datasync().catch(() => undefined)
    await this.current.handle?.close().catch(() => undefined)
    for (const r of this.readers.values()) await r.close().catch(() => undefined)
    this.readers.clear()
  }

  /** Closes the files without writing what is still queued: what a crash leaves behind (tests). */
  async abandon(): Promise<void> {
    this.queue = []
    this.queuedBytes = 0
    await this.writing.catch(() => undefined)
    await this.current.handle?.close().catch(() => undefined)
    for (const r of this.readers.values()) await r.close().catch(() => undefined)
    this.readers.clear()
  }

  /** Removes the whole log directory (after a commit made it redundant). */
  async destroy(): Promise<void> {
    await this.close()
    await fsp.rm(this.dir, { recursive: true, force: true })
  }

  private headerBytes(no: number): Buffer {
    const header: WalHeader = { ...this.header, fileNo: no, created: new Date().toISOString() }
    const sealed = this.keys.seal('cache', Buffer.from(JSON.stringify(header)), `walheader:${this.header.volumeId}:${no}`)
    const len = Buffer.allocUnsafe(4)
    len.writeUInt32LE(sealed.length, 0)
    return Buffer.concat([MAGIC, len, sealed])
  }

  private async openFile(no: number): Promise<void> {
    const handle = await fsp.open(path.join(this.dir, fileName(no)), 'w', 0o600)
    const header = this.headerBytes(no)
    await handle.write(header, 0, header.length, 0)
    await handle.datasync()
    this.current = { no, handle, size: header.length, written: header.length, maxSeq: this.seq }
    this.stats.files++
  }

  private writeQueued(): void {
    if (this.queue.length === 0) return
    const chunks = this.queue
    const seqs = [...this.unwritten.keys()]
    const file = this.current
    this.queue = []
    this.queuedBytes = 0
    this.writing = this.writing.then(async () => {
      const data = Buffer.concat(chunks)
      let done = 0
      while (done < data.length) {
        const { bytesWritten } = await file.handle.write(data, done, data.length - done, file.written + done)
        done += bytesWritten
      }
      file.written += data.length
      this.stats.bytes += data.length
      for (const s of seqs) this.unwritten.delete(s)
    })
    this.writing.catch((err) => {
      // A failed log write (disk full, I/O error) poisons the log: nothing later may be acknowledged.
      this.failed ??= err
    })
  }

  private async reader(no: number): Promise<fsp.FileHandle> {
    let handle = this.readers.get(no)
    if (!handle) {
      handle = await fsp.open(path.join(this.dir, fileName(no)), 'r')
      this.readers.set(no, handle)
    }
    return handle
  }
}

async function readExactly(handle: fsp.FileHandle, buf: Buffer, pos: number): Promise<void> {
  let done = 0
  while (done < buf.length) {
    const { bytesRead } = await handle.read(buf, done, buf.length - done, pos + done)
    if (bytesRead === 0) throw new WalCorruptError(`log ends early at ${pos + done}`)
    done += bytesRead
  }
}

function parseFile(keys: RepoKeys, data: Buffer, volumeId: string, fileNo: number): { header?: WalHeader; records: WalRecord[]; end: number } {
  const records: WalRecord[] = []
  if (data.length < MAGIC.length + 4 || !data.subarray(0, MAGIC.length).equals(MAGIC)) return { records, end: 0 }
  const headerLen = data.readUInt32LE(MAGIC.length)
  const headerEnd = MAGIC.length + 4 + headerLen
  if (headerEnd > data.length) return { records, end: 0 }
  let header: WalHeader
  try {
    const plain = keys.open('cache', data.subarray(MAGIC.length + 4, headerEnd), `walheader:${volumeId}:${fileNo}`)
    header = JSON.parse(plain.toString('utf8'))
  } catch {
    return { records, end: 0 }
  }
  let pos = headerEnd
  while (pos + 4 <= data.length) {
    const len = data.readUInt32LE(pos)
    if (len < 9 || pos + 4 + len > data.length) break
    let plain: Buffer
    try {
      plain = keys.open('cache', data.subarray(pos + 4, pos + 4 + len), aad(volumeId, fileNo))
    } catch {
      break
    }
    const seq = Number(plain.readBigUInt64LE(0))
    records.push({ seq, kind: plain[8], payload: plain.subarray(9), loc: { file: fileNo, pos, seq } })
    pos += 4 + len
  }
  return { header, records, end: pos }
}
