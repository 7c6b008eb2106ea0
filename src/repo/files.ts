import { FileSystem, FsError, isDir, isDotName, isLnk, isReg, ROOT, ROOT_INO, S_IFMT, type Cred, type Inode, type SetAttr, type Timespec } from '../fs/index.js'
import { joinVolumePath, resolveSymlinks, volumePathComponents } from './paths.js'

/**
 * Path-level access to one volume's files without a mount: what `s0fs ls`,
 * `cat`, `put`, `get` …, the HTTP API and library users call. Paths are
 * always inside the volume (see paths.ts).
 */

export type FileType = 'file' | 'dir' | 'symlink' | 'other'

export interface FileStat {
  /** Absolute path inside the volume, as resolved. */
  path: string
  name: string
  type: FileType
  /** Permission bits, setuid/setgid/sticky included (no type bits). */
  mode: number
  size: number
  uid: number
  gid: number
  nlink: number
  /** Modification time, ISO 8601 with milliseconds. */
  mtime: string
  ino: number
  /** Symlinks: the target. */
  target?: string
  /**
   * The stored name is not valid UTF-8 (possible through a mount): `name`
   * and `path` show it with U+FFFD, and paths cannot reach it.
   */
  nameNotUtf8?: boolean
}

export interface WriteOptions {
  /** Permission bits of a file that does not exist yet (default 0644). */
  mode?: number
  /** Set the modification time afterwards (copies keep their times). */
  mtime?: Date
  /** Fail with EEXIST if the path exists. */
  exclusive?: boolean
  /**
   * Replace an existing file with a new one, whole, once the data is
   * complete (HTTP PUT): a failed write leaves the old content. The new file
   * keeps the old one's mode, xattrs and (for root) owner. A file with other
   * hard links is still rewritten in place, so they keep seeing it. The
   * default rewrites in place, as cp does, keeping inode, links and owner.
   */
  replace?: boolean
}

export interface ReadRange {
  offset?: number
  /** Bytes to read; the rest of the file when absent. */
  length?: number
}

/** One change made through a FileTree; the mount daemon turns these into kernel cache invalidations, the HTTP API into events. */
export interface FileChange {
  type: 'create' | 'modify' | 'remove' | 'move'
  path: string
  /** For a move: the old path. */
  from?: string
  /** Directory entries that appeared or disappeared. */
  names: { parent: number; name: Buffer }[]
  /** Inodes whose attributes or data changed. */
  inodes: number[]
}

/** The operations every way of reaching a volume's files offers (directly, or through a mount daemon). */
export interface FileTree {
  readonly writable: boolean
  /** Like lstat(2): a final symlink is described, not followed — unless `follow` (stat(2)). */
  stat(path: string, options?: { follow?: boolean }): Promise<FileStat>
  /** A directory's entries, sorted by name, without "." and "..". */
  list(path: string): Promise<FileStat[]>
  readlink(path: string): Promise<string>
  read(path: string, range?: ReadRange): AsyncIterable<Buffer>
  /** Creates or replaces the file's content. */
  write(path: string, data: AsyncIterable<Uint8Array> | Uint8Array, options?: WriteOptions): Promise<FileStat>
  mkdir(path: string, options?: { parents?: boolean; mode?: number }): Promise<FileStat>
  symlink(path: string, target: string): Promise<FileStat>
  /** Removes a file, a symlink, an empty directory, or with `recursive` a whole tree; returns the entries removed. */
  remove(path: string, options?: { recursive?: boolean }): Promise<number>
  /** rename(2): replaces a file at `to`, or an empty directory when moving a directory. */
  move(from: string, to: string): Promise<void>
  /** A hard link at `path` to the file at `existing`. */
  link(path: string, existing: string): Promise<FileStat>
  /** chmod/chown/utimes of a path (a final symlink itself for times; like lchown). */
  setAttributes(path: string, attrs: FileAttributes): Promise<FileStat>
}

export interface FileAttributes {
  mode?: number
  uid?: number
  gid?: number
  mtime?: Date
}

export interface VolumeFilesOptions {
  /** Whose permissions apply and who owns new files (default root). */
  cred?: Cred
  /** Called after each change. */
  onChange?: (change: FileChange) => void
  /** Called every few MiB written and after each file: lets the owner flush or commit (bounded memory and log). */
  maintain?: () => Promise<void>
}

const READ_PIECE = 1024 * 1024
const WRITE_PIECE = 1024 * 1024
const MAINTAIN_EVERY = 16 * 1024 * 1024

export function fileType(mode: number): FileType {
  return isReg(mode) ? 'file' : isDir(mode) ? 'dir' : isLnk(mode) ? 'symlink' : 'other'
}

/** The latest time a Date can hold, in ms: a stored time beyond it (written by an older s0fs) is shown clamped. */
const DATE_LIMIT_MS = 8.64e15

function isoTime(t: Timespec): string {
  const ms = t.s * 1000 + Math.floor(t.ns / 1e6)
  return new Date(Math.max(-DATE_LIMIT_MS, Math.min(DATE_LIMIT_MS, ms))).toISOString()
}

/** A Date as a timespec: the nanoseconds are never negative, before 1970 too. */
function timespecOf(date: Date): Timespec {
  const ms = date.getTime()
  const s = Math.floor(ms / 1000)
  return { s, ns: (ms - s * 1000) * 1e6 }
}

function describe(path: string, inode: Inode): FileStat {
  const stat: FileStat = {
    path,
    name: path === '/' ? '/' : path.slice(path.lastIndexOf('/') + 1),
    type: fileType(inode.mode),
    mode: inode.mode & ~S_IFMT,
    size: inode.size,
    uid: inode.uid,
    gid: inode.gid,
    nlink: inode.nlink,
    mtime: isoTime(inode.mtime),
    ino: inode.ino,
  }
  if (inode.target) stat.target = inode.target.toString('utf8')
  return stat
}

function withPath(error: unknown, path: string): unknown {
  if (error instanceof FsError && !error.detail) return new FsError(error.code, path)
  return error
}

/** A FileTree over a volume's filesystem core, opened by this process (see Repository.openVolume). */
export class VolumeFiles implements FileTree {
  private readonly cred: Cred
  private written = 0

  constructor(
    private readonly fs: FileSystem,
    private readonly options: VolumeFilesOptions = {},
  ) {
    this.cred = options.cred ?? ROOT
  }

  get writable(): boolean {
    return !this.fs.readOnly
  }

  async stat(path: string, options: { follow?: boolean } = {}): Promise<FileStat> {
    const { components, inode } = await this.resolve(path, options.follow === true)
    return describe(joinVolumePath(components), inode)
  }

  async list(path: string): Promise<FileStat[]> {
    const { components, inode } = await this.resolve(path, true)
    if (!isDir(inode.mode)) throw new FsError('ENOTDIR', joinVolumePath(components))
    const out: FileStat[] = []
    for (const e of await this.entries(inode.ino)) {
      const name = e.name.toString('utf8')
      const stat = describe(joinVolumePath([...components, name]), await this.fs.getattr(e.ino))
      if (!Buffer.from(name, 'utf8').equals(e.name)) stat.nameNotUtf8 = true
      out.push(stat)
    }
    return out.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))
  }

  /** A directory's entries as stored (names as bytes), without "." and "..". */
  private async entries(dir: number): Promise<{ name: Buffer; ino: number }[]> {
    const out: { name: Buffer; ino: number }[] = []
    let cookie = 0
    for (;;) {
      const batch = await this.fs.readdir(this.cred, dir, cookie, 1024)
      if (batch.length === 0) return out
      for (const e of batch) {
        cookie = e.next
        if (!isDotName(e.name)) out.push({ name: e.name, ino: e.ino })
      }
    }
  }

  async readlink(path: string): Promise<string> {
    const { inode, components } = await this.resolve(path, false)
    if (!isLnk(inode.mode)) throw new FsError('EINVAL', `${joinVolumePath(components)} is not a symbolic link`)
    return inode.target!.toString('utf8')
  }

  async *read(path: string, range: ReadRange = {}): AsyncIterable<Buffer> {
    const { inode, components } = await this.resolve(path, true)
    if (isDir(inode.mode)) throw new FsError('EISDIR', joinVolumePath(components))
    // The read permission check a kernel makes at open(2).
    await this.fs.open(this.cred, inode.ino, 0 /* O_RDONLY */).catch((err) => Promise.reject(withPath(err, joinVolumePath(components))))
    const start = range.offset ?? 0
    if (start < 0 || (range.length !== undefined && range.length < 0)) throw new FsError('EINVAL', 'negative range')
    const end = Math.min(inode.size, range.length === undefined ? inode.size : start + range.length)
    for (let at = start; at < end; ) {
      const piece = await this.fs.read(inode.ino, at, Math.min(READ_PIECE, end - at))
      if (piece.length === 0) break // truncated meanwhile
      at += piece.length
      yield piece
    }
  }

  /**
   * A new file is written unnamed and linked in once complete, so nobody
   * (a reader through the mount, a --writeback-cache kernel caching its
   * size) sees it half-written, and an interrupted write leaves nothing. An
   * existing file is truncated and rewritten in place, as cp does: it keeps
   * its inode, links and owner — or, with `replace`, replaced the same way
   * as a new file is written.
   */
  async write(path: string, data: AsyncIterable<Uint8Array> | Uint8Array, options: WriteOptions = {}): Promise<FileStat> {
    const { dir, name, components } = await this.parentOf(path, true)
    const at = joinVolumePath(components)
    const existing = await this.fs.lookup(this.cred, dir.ino, name).catch((err: unknown) => {
      if (err instanceof FsError && err.code === 'ENOENT') return undefined
      throw withPath(err, at)
    })
    if (existing && options.exclusive) throw new FsError('EEXIST', at)
    if (existing && options.replace && !isReg(existing.mode)) throw new FsError(isDir(existing.mode) ? 'EISDIR' : 'EINVAL', at)
    // A file with other names is rewritten in place even when asked to replace: a new inode would leave them
    // on the old content.
    if (existing && (!options.replace || existing.nlink > 1)) {
      if (isDir(existing.mode)) throw new FsError('EISDIR', at)
      // parentOf followed every symlink it could: one left here points at nothing (cp refuses it too).
      if (isLnk(existing.mode)) throw new FsError('ENOENT', `${at} is a symbolic link to a missing file: not writing through it`)
      if (!isReg(existing.mode)) throw new FsError('EINVAL', `${at} is not a regular file`)
      await this.fs.open(this.cred, existing.ino, 0o1001 /* O_WRONLY|O_TRUNC */)
      await this.fill(existing.ino, data, options.mtime)
      this.changed({ type: 'modify', path: at, names: [], inodes: [existing.ino] })
      await this.options.maintain?.()
      return describe(at, await this.fs.getattr(existing.ino))
    }
    // A replacement keeps the replaced file's mode and (as far as the caller may give it) owner.
    const mode = options.mode ?? (existing ? existing.mode & 0o7777 : 0o644)
    const unnamed = await this.fs.tmpfile(this.cred, dir.ino, mode).catch((err: unknown) => {
      throw withPath(err, at)
    })
    try {
      await this.fill(unnamed.ino, data, options.mtime)
      if (existing) await this.carryOver(existing, unnamed, mode)
      const naming = existing ? this.fs.linkReplacing(this.cred, unnamed.ino, dir.ino, name) : this.fs.link(this.cred, unnamed.ino, dir.ino, name)
      await naming.catch((err: unknown) => {
        throw withPath(err, at) // EEXIST: the name was created meanwhile
      })
    } finally {
      await this.fs.unpin(unnamed.ino) // deletes it unless it was linked
    }
    const inodes = existing ? [existing.ino, unnamed.ino] : [unnamed.ino]
    this.changed({ type: existing ? 'modify' : 'create', path: at, names: [{ parent: dir.ino, name }], inodes })
    await this.options.maintain?.()
    return describe(at, await this.fs.getattr(unnamed.ino))
  }

  /**
   * What a replacement keeps of the file it replaces: its extended attributes
   * (but file capabilities, which a write drops) and, as far as the caller
   * may give them, its owner and group.
   */
  private async carryOver(old: Inode, created: Inode, mode: number): Promise<void> {
    for (const name of await this.fs.listxattr(this.cred, old.ino)) {
      if (name.toString('latin1') === 'security.capability') continue
      await this.fs.setxattr(this.cred, created.ino, name, await this.fs.getxattr(this.cred, old.ino, name)).catch((err: unknown) => {
        if (!(err instanceof FsError && (err.code === 'EPERM' || err.code === 'EACCES'))) throw err // (trusted.* needs root)
      })
    }
    if (this.cred.uid === 0 && (old.uid !== created.uid || old.gid !== created.gid)) {
      await this.fs.setattr(this.cred, created.ino, { uid: old.uid, gid: old.gid })
      await this.fs.setattr(this.cred, created.ino, { mode }) // chown clears setuid and setgid
    }
  }

  /** Writes `data` from offset 0 of a regular file, in pieces the log takes well, then sets its mtime. */
  private async fill(ino: number, data: AsyncIterable<Uint8Array> | Uint8Array, mtime?: Date): Promise<void> {
    let offset = 0
    const pending: Buffer[] = []
    let pendingBytes = 0
    const writePending = async () => {
      if (pendingBytes === 0) return
      const piece = pending.length === 1 ? pending[0] : Buffer.concat(pending, pendingBytes)
      pending.length = 0
      pendingBytes = 0
      offset += await this.fs.write(this.cred, ino, offset, piece)
      this.written += piece.length
      if (this.written >= MAINTAIN_EVERY) {
        this.written = 0
        await this.options.maintain?.()
      }
    }
    const source: AsyncIterable<Uint8Array> = data instanceof Uint8Array ? [data] as unknown as AsyncIterable<Uint8Array> : data
    for await (const chunk of source) {
      // Copy: the caller may reuse its buffer, and the log keeps what it is given until it is written.
      pending.push(Buffer.from(chunk))
      pendingBytes += chunk.length
      if (pendingBytes >= WRITE_PIECE) await writePending()
    }
    await writePending()
    if (mtime) await this.fs.setattr(this.cred, ino, { mtime: timespecOf(mtime) })
  }

  async mkdir(path: string, options: { parents?: boolean; mode?: number } = {}): Promise<FileStat> {
    const mode = options.mode ?? 0o755
    if (!options.parents) {
      const { dir, name, components } = await this.parentOf(path, false)
      const inode = await this.fs.mkdir(this.cred, dir.ino, name, mode).catch((err) => Promise.reject(withPath(err, joinVolumePath(components))))
      this.changed({ type: 'create', path: joinVolumePath(components), names: [{ parent: dir.ino, name }], inodes: [] })
      return describe(joinVolumePath(components), inode)
    }
    const components = volumePathComponents(path)
    let last: FileStat | undefined
    for (let i = 1; i <= components.length; i++) {
      const prefix = joinVolumePath(components.slice(0, i))
      try {
        last = await this.stat(prefix)
        if (last.type === 'symlink') last = describe(prefix, (await this.resolve(prefix, true)).inode)
        if (last.type !== 'dir') throw new FsError('ENOTDIR', prefix)
      } catch (err) {
        if (!(err instanceof FsError && err.code === 'ENOENT')) throw err
        // Like mkdir -p -m: the mode is for the directory asked for; parents it makes get the default.
        last = await this.mkdir(prefix, { mode: i === components.length ? mode : 0o755 })
      }
    }
    return last ?? this.stat('/')
  }

  async symlink(path: string, target: string): Promise<FileStat> {
    const { dir, name, components } = await this.parentOf(path, false)
    const inode = await this.fs.symlink(this.cred, dir.ino, name, Buffer.from(target, 'utf8')).catch((err) => Promise.reject(withPath(err, joinVolumePath(components))))
    this.changed({ type: 'create', path: joinVolumePath(components), names: [{ parent: dir.ino, name }], inodes: [] })
    return describe(joinVolumePath(components), inode)
  }

  async remove(path: string, options: { recursive?: boolean } = {}): Promise<number> {
    const { dir, name, components } = await this.parentOf(path, false)
    return this.removeEntry(dir.ino, name, joinVolumePath(components), options.recursive === true)
  }

  /** Removes one entry (with `recursive`, a directory and all it holds, by the names as stored). */
  private async removeEntry(dir: number, name: Buffer, at: string, recursive: boolean): Promise<number> {
    const inode = await this.fs.lookup(this.cred, dir, name).catch((err) => Promise.reject(withPath(err, at)))
    let removed = 0
    if (isDir(inode.mode)) {
      if (recursive) {
        for (const child of await this.entries(inode.ino)) removed += await this.removeEntry(inode.ino, child.name, `${at}/${child.name.toString('utf8')}`, true)
      }
      await this.fs.rmdir(this.cred, dir, name).catch((err) => {
        if (err instanceof FsError && err.code === 'ENOTEMPTY' && !recursive) throw new FsError('ENOTEMPTY', `${at} is a non-empty directory (remove it with --recursive)`)
        throw withPath(err, at)
      })
    } else {
      await this.fs.unlink(this.cred, dir, name).catch((err) => Promise.reject(withPath(err, at)))
    }
    this.changed({ type: 'remove', path: at, names: [{ parent: dir, name }], inodes: [inode.ino] })
    return removed + 1
  }

  async move(from: string, to: string): Promise<void> {
    const src = await this.parentOf(from, false)
    const dst = await this.parentOf(to, false)
    const fromPath = joinVolumePath(src.components)
    const toPath = joinVolumePath(dst.components)
    if (toPath.startsWith(fromPath + '/')) throw new FsError('EINVAL', `cannot move ${fromPath} into itself (${toPath})`)
    // The moved inode's ctime changes, and a replaced one loses a link (its other names must show that).
    const touched = await Promise.all([
      this.fs.lookup(this.cred, src.dir.ino, src.name).catch(missingAsNull),
      this.fs.lookup(this.cred, dst.dir.ino, dst.name).catch(missingAsNull),
    ])
    await this.fs.rename(this.cred, src.dir.ino, src.name, dst.dir.ino, dst.name, 0).catch((err) => Promise.reject(withPath(err, `${fromPath} → ${toPath}`)))
    this.changed({
      type: 'move',
      path: toPath,
      from: fromPath,
      names: [
        { parent: src.dir.ino, name: src.name },
        { parent: dst.dir.ino, name: dst.name },
      ],
      inodes: touched.flatMap((inode) => (inode ? [inode.ino] : [])),
    })
  }

  async link(path: string, existing: string): Promise<FileStat> {
    const target = await this.resolve(existing, false)
    const { dir, name, components } = await this.parentOf(path, false)
    const at = joinVolumePath(components)
    const inode = await this.fs.link(this.cred, target.inode.ino, dir.ino, name).catch((err) => Promise.reject(withPath(err, at)))
    this.changed({ type: 'create', path: at, names: [{ parent: dir.ino, name }], inodes: [inode.ino] })
    return describe(at, inode)
  }

  async setAttributes(path: string, attrs: FileAttributes): Promise<FileStat> {
    const { inode, components } = await this.resolve(path, false)
    const at = joinVolumePath(components)
    const set: SetAttr = {}
    if (attrs.mode !== undefined) set.mode = attrs.mode & 0o7777
    if (attrs.uid !== undefined) set.uid = attrs.uid
    if (attrs.gid !== undefined) set.gid = attrs.gid
    if (attrs.mtime) set.mtime = timespecOf(attrs.mtime)
    const updated = await this.fs.setattr(this.cred, inode.ino, set).catch((err) => Promise.reject(withPath(err, at)))
    this.changed({ type: 'modify', path: at, names: [], inodes: [inode.ino] })
    return describe(at, updated)
  }

  // --- resolution -------------------------------------------------------------

  /** Walks `path` from the root, following symlinks (the last one only with followLast). */
  private async resolve(path: string, followLast: boolean): Promise<{ components: string[]; inode: Inode }> {
    const seen = new Map<string, Inode | null>()
    const lookup = async (components: readonly string[]): Promise<Inode | null> => {
      const key = components.join('/')
      if (seen.has(key)) return seen.get(key)!
      let inode: Inode | null
      if (components.length === 0) inode = await this.fs.getattr(ROOT_INO)
      else {
        const parent = await lookup(components.slice(0, -1))
        inode = parent && isDir(parent.mode) ? await this.fs.lookup(this.cred, parent.ino, Buffer.from(components[components.length - 1])).catch(missingAsNull) : null
      }
      seen.set(key, inode)
      return inode
    }
    const requested = volumePathComponents(path)
    const components = await resolveSymlinks(
      requested,
      async (c) => {
        const inode = await lookup(c)
        return inode && isLnk(inode.mode) ? inode.target!.toString('utf8') : undefined
      },
      followLast,
    )
    // Walk again, now reporting errors (ENOENT, ENOTDIR, EACCES) precisely.
    let inode = await this.fs.getattr(ROOT_INO)
    for (let i = 0; i < components.length; i++) {
      if (!isDir(inode.mode)) throw new FsError('ENOTDIR', joinVolumePath(components.slice(0, i)))
      inode = await this.fs.lookup(this.cred, inode.ino, Buffer.from(components[i])).catch((err) => Promise.reject(withPath(err, joinVolumePath(components.slice(0, i + 1)))))
    }
    return { components, inode }
  }

  /** The directory that holds (or will hold) `path`, and the name in it. */
  private async parentOf(path: string, followLast: boolean): Promise<{ dir: Inode; name: Buffer; components: string[] }> {
    let components = volumePathComponents(path)
    if (components.length === 0) throw new FsError('EINVAL', 'the volume root cannot be created, removed or moved')
    if (followLast) {
      // A final symlink is followed (like open(2)); a dangling one is left for the caller to judge.
      try {
        components = (await this.resolve(path, true)).components
      } catch (err) {
        if (!(err instanceof FsError && err.code === 'ENOENT')) throw err
      }
    }
    const { inode: dir, components: dirComponents } = await this.resolve(joinVolumePath(components.slice(0, -1)), true)
    if (!isDir(dir.mode)) throw new FsError('ENOTDIR', joinVolumePath(dirComponents))
    const last = components[components.length - 1]
    return { dir, name: Buffer.from(last), components: [...dirComponents, last] }
  }

  private changed(change: FileChange): void {
    this.options.onChange?.(change)
  }
}

function missingAsNull(err: unknown): null {
  if (err instanceof FsError && (err.code === 'ENOENT' || err.code === 'ENOTDIR')) return null
  throw err
}
