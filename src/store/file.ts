import { randomBytes } from 'node:crypto'
import { constants as fsc, promises as fsp } from 'node:fs'
import { hostname } from 'node:os'
import path from 'node:path'
import { NotFoundError, PreconditionFailedError, StoreUnavailableError } from './errors.js'
import { assertValidKey, newCounters } from './counters.js'
import type { Body, ListOptions, ListPage, ObjectInfo, ObjectStore, PutResult, StoreCapabilities } from './types.js'
import { bodyLength } from './types.js'
import { processAlive } from '../util/process.js'

const TMP_DIR = '.tmp'
const LOCK_DIR = '.locks'
/** A lock older than this is considered abandoned even if its owner cannot be checked. */
const STALE_LOCK_MS = 30_000
const LOCK_WAIT_MS = 60_000

/**
 * `file:///dir`: objects are files under `dir`, keyed by their relative path.
 *
 * Every write goes to a temp file that is fsynced, renamed into place, and then
 * the directory is fsynced, so a crash leaves either the old or the new object,
 * never a torn one. Put-if-absent is an atomic hard link (fails if the name
 * exists); compare-and-swap holds a per-key lock file (O_EXCL create) around
 * read-compare-rename, which excludes other processes on the same filesystem.
 */
export class FileStore implements ObjectStore {
  readonly capabilities: StoreCapabilities = { atomicConditionalWrites: true }
  readonly counters = newCounters()

  constructor(readonly root: string) {}

  get displayUrl(): string {
    return `file://${this.root}`
  }

  async get(key: string, range?: { start: number; end?: number }): Promise<Buffer> {
    this.counters.get++
    const file = this.pathOf(key)
    let handle: fsp.FileHandle
    try {
      handle = await fsp.open(file, 'r')
    } catch (err) {
      throw this.mapError(err, key)
    }
    try {
      let data: Buffer
      if (!range) {
        data = await handle.readFile()
      } else {
        const size = (await handle.stat()).size
        const end = range.end === undefined ? size : Math.min(range.end, size)
        if (range.start < 0 || range.start > end) throw new RangeError(`invalid range ${range.start}-${range.end} of ${key}`)
        data = Buffer.allocUnsafe(end - range.start)
        let done = 0
        while (done < data.length) {
          const { bytesRead } = await handle.read(data, done, data.length - done, range.start + done)
          if (bytesRead === 0) break
          done += bytesRead
        }
        data = data.subarray(0, done)
      }
      this.counters.bytesIn += data.length
      return data
    } finally {
      await handle.close()
    }
  }

  async getVersioned(key: string): Promise<{ data: Buffer; etag: string }> {
    this.counters.get++
    const file = this.pathOf(key)
    let handle: fsp.FileHandle
    try {
      handle = await fsp.open(file, 'r')
    } catch (err) {
      throw this.mapError(err, key)
    }
    try {
      // Stat the open handle: the etag then describes exactly the bytes we read,
      // even if the name is replaced meanwhile.
      const st = await handle.stat({ bigint: true })
      const data = await handle.readFile()
      this.counters.bytesIn += data.length
      return { data, etag: etagOf(st) }
    } finally {
      await handle.close()
    }
  }

  async put(key: string, data: Body): Promise<PutResult> {
    this.counters.put++
    const file = this.pathOf(key)
    const tmp = await this.writeTemp(data)
    try {
      await this.inParent(file, () => fsp.rename(tmp, file))
    } catch (err) {
      await fsp.rm(tmp, { force: true })
      throw this.mapError(err, key)
    }
    await fsyncDir(path.dirname(file))
    this.counters.bytesOut += bodyLength(data)
    return { etag: etagOf(await fsp.stat(file, { bigint: true })) }
  }

  async putIfAbsent(key: string, data: Buffer): Promise<PutResult> {
    this.counters.put++
    const file = this.pathOf(key)
    const tmp = await this.writeTemp(data)
    try {
      // link(2) fails with EEXIST if the name exists: an atomic create-if-absent.
      await this.inParent(file, () => fsp.link(tmp, file))
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'EEXIST') throw new PreconditionFailedError(key, 'object already exists')
      throw this.mapError(err, key)
    } finally {
      await fsp.rm(tmp, { force: true })
    }
    await fsyncDir(path.dirname(file))
    this.counters.bytesOut += data.length
    return { etag: etagOf(await fsp.stat(file, { bigint: true })) }
  }

  async putIfMatch(key: string, data: Buffer, etag: string): Promise<PutResult> {
    this.counters.put++
    const file = this.pathOf(key)
    const tmp = await this.writeTemp(data)
    try {
      return await this.withKeyLock(key, async () => {
        let current: string
        try {
          current = etagOf(await fsp.stat(file, { bigint: true }))
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw new PreconditionFailedError(key, 'object does not exist')
          throw err
        }
        if (current !== etag) throw new PreconditionFailedError(key, 'object changed')
        await fsp.rename(tmp, file)
        await fsyncDir(path.dirname(file))
        this.counters.bytesOut += data.length
        return { etag: etagOf(await fsp.stat(file, { bigint: true })) }
      })
    } finally {
      await fsp.rm(tmp, { force: true })
    }
  }

  async head(key: string): Promise<ObjectInfo | undefined> {
    this.counters.head++
    try {
      const st = await fsp.stat(this.pathOf(key), { bigint: true })
      return { key, size: Number(st.size), etag: etagOf(st) }
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT' || (err as NodeJS.ErrnoException).code === 'ENOTDIR') return undefined
      throw this.mapError(err, key)
    }
  }

  async listPage(prefix: string, options: ListOptions = {}): Promise<ListPage> {
    this.counters.list++
    const limit = options.limit ?? 1000
    const startAfter = options.startAfter ?? ''
    const objects: ObjectInfo[] = []
    // Walk directories in the byte order of the keys they hold: a directory
    // "a" holds keys "a/…", so it sorts as "a/" among its siblings.
    const walk = async (dirKey: string): Promise<boolean> => {
      let entries: import('node:fs').Dirent[]
      try {
        entries = await fsp.readdir(dirKey ? path.join(this.root, dirKey) : this.root, { withFileTypes: true })
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT' || (err as NodeJS.ErrnoException).code === 'ENOTDIR') return true
        throw err
      }
      const items = entries
        .filter((e) => !e.name.startsWith('.') && (e.isDirectory() || e.isFile()))
        .map((e) => ({ key: dirKey + e.name + (e.isDirectory() ? '/' : ''), dir: e.isDirectory() }))
        .sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0))
      for (const item of items) {
        if (item.dir) {
          const relevant = item.key.startsWith(prefix) || prefix.startsWith(item.key)
          const beforeStart = startAfter >= item.key && !startAfter.startsWith(item.key)
          if (!relevant || beforeStart) continue
          if (!(await walk(item.key))) return false
        } else {
          if (!item.key.startsWith(prefix) || item.key <= startAfter) continue
          if (objects.length === limit) return false
          const st = await fsp.stat(path.join(this.root, item.key), { bigint: true }).catch(() => undefined)
          if (st) objects.push({ key: item.key, size: Number(st.size), etag: etagOf(st), modified: Number(st.mtimeMs) })
        }
      }
      return true
    }
    const complete = await walk('')
    return { objects, next: complete ? undefined : objects[objects.length - 1]?.key }
  }

  async deleteMany(keys: string[]): Promise<void> {
    const dirs = new Set<string>()
    for (const key of keys) {
      this.counters.delete++
      const file = this.pathOf(key)
      await fsp.rm(file, { force: true })
      dirs.add(path.dirname(file))
    }
    for (const dir of dirs) await fsyncDir(dir).catch(() => undefined)
  }

  async close(): Promise<void> {}

  private pathOf(key: string): string {
    assertValidKey(key)
    return path.join(this.root, key)
  }

  private async writeTemp(data: Body): Promise<string> {
    const dir = path.join(this.root, TMP_DIR)
    const tmp = path.join(dir, `${process.pid}-${randomBytes(8).toString('hex')}`)
    let handle: fsp.FileHandle
    try {
      handle = await fsp.open(tmp, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL, 0o600)
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw this.mapError(err, TMP_DIR)
      await fsp.mkdir(dir, { recursive: true, mode: 0o700 })
      handle = await fsp.open(tmp, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL, 0o600)
    }
    try {
      if (Buffer.isBuffer(data)) await handle.writeFile(data)
      else await writeAllParts(handle, data)
      await handle.datasync()
    } catch (err) {
      await handle.close()
      await fsp.rm(tmp, { force: true })
      throw this.mapError(err, TMP_DIR)
    }
    await handle.close()
    return tmp
  }

  /** Runs `op`, creating the file's parent directories and retrying once if they are missing. */
  private async inParent(file: string, op: () => Promise<void>): Promise<void> {
    try {
      await op()
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err
      await fsp.mkdir(path.dirname(file), { recursive: true, mode: 0o700 })
      await op()
    }
  }

  private async withKeyLock<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const dir = path.join(this.root, LOCK_DIR)
    const lock = path.join(dir, key.replaceAll('/', '%') + '.lock')
    const owner = JSON.stringify({ host: hostname(), pid: process.pid, at: Date.now() })
    const deadline = Date.now() + LOCK_WAIT_MS
    for (let attempt = 0; ; attempt++) {
      try {
        await fsp.writeFile(lock, owner, { flag: 'wx', mode: 0o600 })
        break
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code
        if (code === 'ENOENT') {
          await fsp.mkdir(dir, { recursive: true, mode: 0o700 })
          continue
        }
        if (code !== 'EEXIST') throw err
        if (await this.breakIfStale(lock)) continue
        if (Date.now() > deadline) throw new StoreUnavailableError(`timed out waiting for lock on ${key} (${lock})`)
        await sleep(Math.min(50, 1 + attempt * 2) * (0.5 + Math.random()))
      }
    }
    try {
      return await fn()
    } finally {
      await fsp.rm(lock, { force: true })
    }
  }

  /** Removes a lock whose owner died (same host, pid gone) or that is older than STALE_LOCK_MS. */
  private async breakIfStale(lock: string): Promise<boolean> {
    let info: { host?: string; pid?: number; at?: number }
    try {
      info = JSON.parse(await fsp.readFile(lock, 'utf8'))
    } catch {
      // Being written right now, or just removed: not stale.
      return false
    }
    const dead = info.host === hostname() && typeof info.pid === 'number' && !processAlive(info.pid)
    const old = typeof info.at === 'number' && Date.now() - info.at > STALE_LOCK_MS
    if (!dead && !old) return false
    // Rename first so that of two processes breaking the same lock only one succeeds.
    const grave = `${lock}.stale-${randomBytes(6).toString('hex')}`
    try {
      await fsp.rename(lock, grave)
    } catch {
      return false
    }
    await fsp.rm(grave, { force: true })
    return true
  }

  private mapError(err: unknown, key: string): Error {
    const code = (err as NodeJS.ErrnoException).code
    if (code === 'ENOENT' || code === 'ENOTDIR') return new NotFoundError(key)
    if (code === 'ENOSPC') return new StoreUnavailableError(`no space left on device writing ${key} under ${this.root}`, { cause: err })
    if (code === 'EACCES' || code === 'EPERM' || code === 'EROFS') {
      return new StoreUnavailableError(`permission denied for ${key} under ${this.root}`, { cause: err })
    }
    return err as Error
  }
}

function etagOf(st: import('node:fs').BigIntStats): string {
  // Every replacement is a new inode (rename of a fresh temp file), so inode,
  // change time and size identify a version without hashing the content.
  return `${st.ino.toString(36)}.${st.ctimeNs.toString(36)}.${st.size.toString(36)}`
}

async function fsyncDir(dir: string): Promise<void> {
  const handle = await fsp.open(dir, 'r')
  try {
    await handle.sync()
  } finally {
    await handle.close()
  }
}


function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms))
}

/** Writes the parts back to back from the file's start (writev, again for whatever a short write left). */
async function writeAllParts(handle: fsp.FileHandle, parts: readonly Buffer[]): Promise<void> {
  let rest = parts.filter((p) => p.length > 0)
  let position = 0
  while (rest.length) {
    const { bytesWritten } = await handle.writev(rest, position)
    if (bytesWritten === 0) throw Object.assign(new Error('write made no progress'), { code: 'EIO' })
    position += bytesWritten
    let skip = bytesWritten
    while (rest.length && skip >= rest[0].length) skip -= rest.shift()!.length
    if (skip > 0) rest[0] = rest[0].subarray(skip)
  }
}
