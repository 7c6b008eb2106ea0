import { LRUCache } from 'lru-cache'
import type { BlobStore } from '../blob/index.js'
import type { Tree } from '../meta/btree.js'
import type { Wal, WalLocation, WalRecord } from '../portal/wal.js'
import { fsError, FsError } from './errors.js'
import {
  DATA_HEADER,
  dataRecord,
  decodeDataHeader,
  decodeExtents,
  decodeKv,
  decodeKvMsgpack,
  decodePunch,
  decodeTruncate,
  encodeExtents,
  encodeKv,
  encodePunch,
  encodeTruncate,
  REC,
  writeDataHeader,
  type ExtentsRecord,
} from './journal.js'
import { ReadTracker } from './read-tracker.js'
import { Mutex } from './mutex.js'
import { Overlay, type Piece } from './overlay.js'
import { checkAccess, checkSticky, chmodResult, inGroup, isOwnerOrRoot, mayAccess, R_OK, W_OK, X_OK, type Cred } from './perms.js'
import {
  cookieKey,
  cookiePrefix,
  decodeDirent,
  decodeExtent,
  decodeInode,
  decodeSuper,
  direntKey,
  encodeDirent,
  encodeExtent,
  encodeInode,
  encodeSuper,
  extentKey,
  extentPrefix,
  FIRST_COOKIE,
  inodeKey,
  recordCopy,
  isDir,
  KIND,
  isLnk,
  isReg,
  orphanKey,
  orphanPrefix,
  prefixEnd,
  readU64,
  ROOT_INO,
  S_IFDIR,
  S_IFLNK,
  S_IFMT,
  S_IFREG,
  S_ISGID,
  S_ISUID,
  superKey,
  xattrKey,
  xattrPrefix,
  type Extent,
  type Inode,
  type Superblock,
  type Timespec,
} from './records.js'

export const NAME_MAX = 255
export const PATH_MAX = 4096
export const XATTR_NAME_MAX = 255
export const XATTR_SIZE_MAX = 65536
/** Largest file offset: JavaScript integers are exact to 2^53. */
export const MAX_FILE_SIZE = 2 ** 53 - 1
/** No extent is longer than the chunker's maximum chunk, so the extent covering x starts after x − this. */
export const MAX_EXTENT_LEN = 4 * 1024 * 1024
const LINK_MAX = 65000
/** Decoded inodes kept (~260 B each): the hot set of a working tree; the page cache holds the rest encoded. */
const INODE_CACHE_ENTRIES = 8192
/**
 * How far ahead of a sequential reader chunks are decoded (half the
 * decoded-chunk cache). A cold 512 MiB dd from a file:// bucket ran 290–308
 * MB/s with it and 181–190 without; from the portal ~350 against ~290.
 */
const READ_AHEAD_BYTES = 8 * 1024 * 1024

/** A read returns at most this many parts (see assembleParts). */
const MAX_READ_PARTS = 64
/** Shared zeros for the holes of read replies (never written to). */
const ZEROS = Buffer.alloc(1024 * 1024)
const zeros = (n: number): Buffer => (n <= ZEROS.length ? ZEROS.subarray(0, n) : Buffer.alloc(n))

export const RENAME_NOREPLACE = 1
export const RENAME_EXCHANGE = 2
export const XATTR_CREATE = 1
export const XATTR_REPLACE = 2
export const FALLOC_FL_KEEP_SIZE = 1
export const FALLOC_FL_PUNCH_HOLE = 2
export const FALLOC_FL_ZERO_RANGE = 0x10

export interface SetAttr {
  mode?: number
  uid?: number
  gid?: number
  size?: number
  atime?: Timespec | 'now'
  mtime?: Timespec | 'now'
  ctime?: Timespec
  /** Clear setuid/setgid (the kernel asks when an unprivileged caller truncates). */
  killPriv?: boolean
}

export interface DirEntry {
  name: Buffer
  ino: number
  type: number
  /** Pass as `cookie` to continue after this entry. */
  next: number
}

export interface StatFs {
  blockSize: number
  blocks: number
  blocksFree: number
  files: number
  filesFree: number
  nameMax: number
}

export interface FileSystemOptions {
  tree: Tree
  blobs: BlobStore
  /** The log; without one the filesystem is read-only. */
  wal?: Wal
  now?: () => Timespec
  /** Called whenever a file gains pending data (the flusher listens). */
  onDirty?: (ino: number) => void
  /**
   * Awaited before bytes are accepted: the portal's admission control (waits
   * while the portal is full, throws ENOSPC when the disk is). Gives (or
   * resolves to) a function called once the bytes are in the log (it ends
   * their reservation).
   */
  admit?: Admit
}

/** Returns at once when there is room, as most writes find: a promise only when it must wait or check. */
export type Admit = (bytes: number) => (() => void) | Promise<() => void>

/** Extents of a file intersecting [start, end), in order. */
export async function extentsInTree(tree: Tree, ino: number, start: number, end: number): Promise<Extent[]> {
  const out: Extent[] = []
  // Extents never overlap: of those starting before `start`, only the last can reach into the range.
  // (Scanning from start - MAX_EXTENT_LEN instead decoded up to a thousand 4 KiB patches per call.)
  const before = await tree.lastBefore(extentKey(ino, Math.max(0, start - MAX_EXTENT_LEN)), extentKey(ino, start))
  if (before) {
    const e = decodeExtent(readU64(before[0], 9), before[1])
    if (e.off + e.len > start) out.push(e)
  }
  for await (const [key, val] of tree.entries(extentKey(ino, start), end === Number.MAX_SAFE_INTEGER ? prefixEnd(extentPrefix(ino)) : extentKey(ino, end))) {
    out.push(decodeExtent(readU64(key, 9), val))
  }
  return out
}

/** Removes a file's extents within [start, end), trimming the ones that straddle its edges. */
export async function cutExtentsIn(tree: Tree, ino: number, start: number, end: number): Promise<void> {
  for (const e of await extentsInTree(tree, ino, start, end)) {
    await tree.delete(extentKey(ino, e.off))
    if (e.off < start) await tree.put(extentKey(ino, e.off), encodeExtent({ ...e, len: start - e.off }))
    if (e.off + e.len > end) {
      const cut = end - e.off
      await tree.put(extentKey(ino, end), encodeExtent({ off: end, len: e.len - cut, blob: e.blob, blobOff: e.blobOff + cut }))
    }
  }
}

/** Puts a stored region's extents in place of what the file had there. */
export async function putExtentsIn(tree: Tree, r: { ino: number; start: number; end: number; extents: Extent[] }): Promise<void> {
  await cutExtentsIn(tree, r.ino, r.start, r.end)
  for (const e of r.extents) await tree.put(extentKey(r.ino, e.off), encodeExtent(e))
}

/** Wall-clock time of performance.now()'s origin; moved when the wall clock is stepped (see nowTimespec). */
let clockOffsetMs = Date.now() - performance.now()

/**
 * The current time with sub-millisecond precision: performance.now() on an
 * origin anchored to the wall clock. performance.now() is monotonic and
 * does not follow a stepped wall clock (NTP, a resumed VM), so the origin is
 * re-anchored whenever the two part by more than the 1 ms Date.now() can
 * resolve: file times stay what `date` says, as on a local disk.
 */
export function nowTimespec(): Timespec {
  let ms = clockOffsetMs + performance.now()
  const wall = Date.now()
  if (ms < wall - 1 || ms > wall + 2) {
    clockOffsetMs = wall - performance.now()
    ms = clockOffsetMs + performance.now()
  }
  const s = Math.floor(ms / 1000)
  return { s, ns: Math.min(999_999_999, Math.floor((ms - s * 1000) * 1e6)) }
}

/**
 * One key change of a metadata operation: a value, or null to delete. An
 * inode record carries the inode it encodes, which the inode cache takes
 * instead of decoding the bytes again.
 */
type Change = [key: string, value: Buffer | null, inode?: Inode]

function putInode(tx: Change[], inode: Inode): void {
  // A copy: the caller may go on changing its inode (timespecs and targets are replaced, never changed in place).
  tx.push([inodeKey(inode.ino), encodeInode(inode), { ...inode }])
}

function missingInode(ino: number): never {
  throw fsError('ENOENT', `inode ${ino}`)
}

function validName(name: Buffer): void {
  if (name.length === 0) throw fsError('ENOENT', 'empty name')
  if (name.length > NAME_MAX) throw fsError('ENAMETOOLONG', `name is ${name.length} bytes (max ${NAME_MAX})`)
  if (name.includes(0x2f) || name.includes(0)) throw fsError('EINVAL', 'name contains / or NUL')
}

/** "." or "..": names every directory has and none can be given. */
export function isDotName(name: Buffer): boolean {
  return (name.length === 1 && name[0] === 0x2e) || (name.length === 2 && name[0] === 0x2e && name[1] === 0x2e)
}

/**
 * The POSIX filesystem over one volume's metadata tree and blob store. Every
 * operation works on inode numbers (the FUSE adapter resolves nothing by
 * path). Metadata changes go to the tree and, as absolute records, to the
 * log; written bytes go to the log and stay "pending" (an overlay per file)
 * until the flusher stores them as blobs.
 */
export class FileSystem {
  readonly tree: Tree
  readonly blobs: BlobStore
  readonly wal?: Wal
  readonly lock = new Mutex()
  /** Pending (not yet stored) bytes per file. */
  readonly overlays = new Map<number, Overlay>()
  /** Files with pending bytes, with the time of their last write (ms). */
  readonly dirty = new Map<number, number>()
  /** Log files still referenced by pending pieces (file number → piece count). */
  readonly walFileRefs = new Map<number, number>()
  /** Log files that pieces frozen by a commit read from, until it has stored them. */
  private readonly frozenLogFiles = new Set<number>()
  /** Bytes written but not yet stored as blobs. */
  pendingBytes = 0
  /**
   * Cuts (a truncate down, a punched hole) since flushes began: a flush that
   * planned a region before one must not put the cut bytes back. Newer writes
   * over a region need no such care: their pieces stay pending on top.
   */
  private cutClock = 0
  private readonly lastCut = new Map<number, number>()
  private flushesInFlight = 0
  /** Kernel/handle references that keep an unlinked inode alive. */
  private readonly pins = new Map<number, number>()
  private readonly now: () => Timespec
  private readonly onDirty?: (ino: number) => void
  admit?: Admit
  private superblock?: Superblock
  private readonly inodeCache = new LRUCache<number, Inode>({ max: INODE_CACHE_ENTRIES })
  /** Where the last read of each recently read file ended: a read starting there is sequential. */
  private readonly readEnds = new LRUCache<number, number>({ max: 1024 })
  private failure?: Error
  /** Reads in flight that may touch log files (a log file is dropped only after those begun before have ended). */
  readonly reads = new ReadTracker()

  constructor(options: FileSystemOptions) {
    this.tree = options.tree
    this.blobs = options.blobs
    this.wal = options.wal
    this.now = options.now ?? nowTimespec
    this.onDirty = options.onDirty
    this.admit = options.admit
  }

  get readOnly(): boolean {
    return !this.wal
  }

  /** Initializes an empty tree as a new volume: superblock and root directory. */
  static async format(tree: Tree, root: { uid: number; gid: number; mode?: number }, now = nowTimespec()): Promise<void> {
    const sb: Superblock = { nextIno: ROOT_INO + 1, created: now.s }
    const rootInode: Inode = {
      ino: ROOT_INO,
      mode: S_IFDIR | (root.mode ?? 0o755),
      uid: root.uid,
      gid: root.gid,
      nlink: 2,
      size: 0,
      atime: now,
      mtime: now,
      ctime: now,
      rdev: 0,
      parent: ROOT_INO,
      nextCookie: FIRST_COOKIE,
    }
    await tree.put(superKey, encodeSuper(sb))
    await tree.put(inodeKey(ROOT_INO), encodeInode(rootInode))
  }

  /** Stops all writes after an unrecoverable failure (log write error, lost lease). */
  fail(err: Error): void {
    this.failure ??= err
  }

  get failed(): Error | undefined {
    return this.failure
  }

  // --- lookups ---------------------------------------------------------------

  /**
   * An inode, as a private copy the caller may change (and then write back).
   * Decoded inodes are cached: every operation reads at least one, most
   * several, so a cached one is returned as it is rather than as a promise
   * (callers await either; an async function here was a promise and a
   * suspended frame per call, a tenth of a metadata operation's garbage).
   */
  private getInode(ino: number): Inode | Promise<Inode> {
    const inode = this.tryInode(ino)
    if (inode instanceof Promise) return inode.then((found) => found ?? missingInode(ino))
    return inode ?? missingInode(ino)
  }

  private tryInode(ino: number): Inode | undefined | Promise<Inode | undefined> {
    const cached = this.inodeCache.get(ino)
    // Timespecs and targets are replaced, never changed in place: a shallow copy is private enough.
    if (cached) return { ...cached }
    return this.loadInode(ino)
  }

  private async loadInode(ino: number): Promise<Inode | undefined> {
    const raw = await this.tree.get(inodeKey(ino))
    if (!raw) return undefined
    const inode = decodeInode(ino, raw)
    this.inodeCache.set(ino, inode)
    return { ...inode }
  }

  /** Writes an inode record straight to the tree (changes implied by a log record of their own). */
  private storeInode(inode: Inode): void | Promise<void> {
    const key = inodeKey(inode.ino)
    const record = encodeInode(inode)
    const cache = () => void this.inodeCache.set(inode.ino, { ...inode })
    // Every write stores its inode (size, mtime): no promise when the page is in memory, as it nearly always is.
    if (this.tree.putResident(key, record)) return cache()
    return this.tree.put(key, record).then(cache)
  }

  async lookup(cred: Cred, parent: number, name: Buffer): Promise<Inode> {
    const inode = await this.tryLookup(cred, parent, name)
    if (!inode) throw fsError('ENOENT')
    return inode
  }

  /**
   * lookup(), with undefined for a name that does not exist: the FUSE adapter
   * answers every new name's negative lookup, and an FsError each cost more
   * than the lookup itself.
   */
  async tryLookup(cred: Cred, parent: number, name: Buffer): Promise<Inode | undefined> {
    return this.lock.run(async () => {
      const dir = await this.getInode(parent)
      if (!isDir(dir.mode)) throw fsError('ENOTDIR')
      if (name.length > NAME_MAX) throw fsError('ENAMETOOLONG')
      checkAccess(cred, dir, X_OK)
      if (name.length === 1 && name[0] === 0x2e) return dir
      if (name.length === 2 && name[0] === 0x2e && name[1] === 0x2e) return this.getInode(dir.parent)
      const raw = await this.tree.get(direntKey(parent, name))
      return raw && this.getInode(decodeDirent(raw).ino)
    })
  }

  async getattr(ino: number): Promise<Inode> {
    return this.lock.run(() => this.getInode(ino))
  }

  async readlink(ino: number): Promise<Buffer> {
    const inode = await this.getattr(ino)
    if (!isLnk(inode.mode) || !inode.target) throw fsError('EINVAL', 'not a symbolic link')
    return inode.target
  }

  // --- creating --------------------------------------------------------------

  async mknod(cred: Cred, parent: number, name: Buffer, mode: number, rdev = 0, umask = 0): Promise<Inode> {
    const type = mode & S_IFMT || S_IFREG
    if (type === S_IFDIR || type === S_IFLNK) throw fsError('EINVAL', 'use mkdir or symlink')
    return this.createNode(cred, parent, name, type | (mode & 0o7777 & ~umask), { rdev })
  }

  async create(cred: Cred, parent: number, name: Buffer, mode: number, umask = 0, exclusive = true): Promise<Inode> {
    try {
      return await this.createNode(cred, parent, name, S_IFREG | (mode & 0o7777 & ~umask), {})
    } catch (err) {
      if (!exclusive && err instanceof FsError && err.code === 'EEXIST') return this.lookup(cred, parent, name)
      throw err
    }
  }

  /**
   * A regular file with no name yet (open(2)'s O_TMPFILE): it is kept as an
   * orphan, pinned for the caller, until link() names it or unpin() lets it
   * go (a crash leaves an orphan the next mount deletes). Writing a file
   * whole and then linking it means nobody sees it half-written — above all
   * a --writeback-cache kernel, which would keep a partial size it saw.
   */
  async tmpfile(cred: Cred, parent: number, mode: number): Promise<Inode> {
    const inode = await this.createNode(cred, parent, undefined, S_IFREG | (mode & 0o7777), {})
    this.pin(inode.ino)
    return inode
  }

  async mkdir(cred: Cred, parent: number, name: Buffer, mode: number, umask = 0): Promise<Inode> {
    return this.createNode(cred, parent, name, S_IFDIR | (mode & 0o7777 & ~umask), {})
  }

  async symlink(cred: Cred, parent: number, name: Buffer, target: Buffer): Promise<Inode> {
    if (target.length === 0) throw fsError('ENOENT', 'empty symlink target')
    if (target.length >= 4096) throw fsError('ENAMETOOLONG', 'symlink target too long')
    return this.createNode(cred, parent, name, S_IFLNK | 0o777, { target })
  }

  /** Creates an inode named `name` in `parent`, or (name undefined) an unnamed orphan whose setgid and group follow `parent`. */
  private async createNode(cred: Cred, parent: number, name: Buffer | undefined, mode: number, extra: { rdev?: number; target?: Buffer }): Promise<Inode> {
    if (name) validName(name)
    return this.mutate(async (tx) => {
      const dir = await this.getInode(parent)
      if (!isDir(dir.mode)) throw fsError('ENOTDIR')
      if (dir.nlink === 0) throw fsError('ENOENT', 'directory was removed')
      checkAccess(cred, dir, W_OK | X_OK)
      if (name && (isDotName(name) || (await this.tree.get(direntKey(parent, name))))) throw fsError('EEXIST')
      const now = this.now()
      const sb = await this.getSuper()
      const ino = sb.nextIno++
      let gid = cred.gid
      let bits = mode
      // A setgid directory hands its group down, and its setgid bit to subdirectories.
      if (dir.mode & S_ISGID) {
        gid = dir.gid
        if (isDir(mode)) bits |= S_ISGID
      } else if (!isDir(mode) && bits & S_ISGID && cred.uid !== 0 && !inGroup(cred, gid)) {
        bits &= ~S_ISGID
      }
      const inode: Inode = {
        ino,
        mode: bits,
        uid: cred.uid,
        gid,
        nlink: !name ? 0 : isDir(mode) ? 2 : 1,
        size: extra.target?.length ?? 0,
        atime: now,
        mtime: now,
        ctime: now,
        rdev: extra.rdev ?? 0,
        parent,
        nextCookie: FIRST_COOKIE,
        target: extra.target,
      }
      tx.push([superKey, encodeSuper(sb)])
      putInode(tx, inode)
      if (!name) {
        tx.push([orphanKey(ino), Buffer.alloc(0)])
        return inode
      }
      const cookie = dir.nextCookie++
      if (isDir(mode)) dir.nlink++
      dir.mtime = dir.ctime = now
      tx.push([direntKey(parent, name), encodeDirent({ ino, type: mode & S_IFMT, cookie })])
      tx.push([cookieKey(parent, cookie), recordCopy(name)])
      putInode(tx, dir)
      return inode
    })
  }

  async link(cred: Cred, ino: number, newParent: number, newName: Buffer): Promise<Inode> {
    validName(newName)
    return this.mutate(async (tx) => {
      const inode = await this.getInode(ino)
      const dir = await this.getInode(newParent)
      if (!isDir(dir.mode)) throw fsError('ENOTDIR')
      if (dir.nlink === 0) throw fsError('ENOENT', 'directory was removed')
      checkAccess(cred, dir, W_OK | X_OK)
      if (isDotName(newName) || (await this.tree.get(direntKey(newParent, newName)))) throw fsError('EEXIST')
      if (isDir(inode.mode)) throw fsError('EPERM', 'hard links to directories are not allowed')
      if (inode.nlink >= LINK_MAX) throw fsError('EMLINK')
      const now = this.now()
      const cookie = dir.nextCookie++
      if (inode.nlink === 0) inode.parent = newParent // an unnamed file (O_TMPFILE) gets its first name here
      inode.nlink++
      inode.ctime = now
      dir.mtime = dir.ctime = now
      tx.push([direntKey(newParent, newName), encodeDirent({ ino, type: inode.mode & S_IFMT, cookie })])
      tx.push([cookieKey(newParent, cookie), recordCopy(newName)])
      putInode(tx, inode)
      putInode(tx, dir)
      if (this.pins.has(ino)) tx.push([orphanKey(ino), null])
      return inode
    })
  }

  /**
   * Names an unnamed file (see tmpfile) `name` in `dir`, replacing a file of
   * that name in the same step, as rename(2) over it would: readers see the
   * old file or the new one, never a mix. Its other names keep the old one.
   */
  async linkReplacing(cred: Cred, ino: number, dir: number, name: Buffer): Promise<Inode> {
    validName(name)
    if (isDotName(name)) throw fsError('EEXIST')
    return this.mutate(async (tx) => {
      const inode = await this.getInode(ino)
      if (inode.nlink !== 0 || !isReg(inode.mode)) throw fsError('EINVAL', 'only an unnamed regular file can be linked over a name')
      const d = await this.getInode(dir)
      if (!isDir(d.mode)) throw fsError('ENOTDIR')
      if (d.nlink === 0) throw fsError('ENOENT', 'directory was removed')
      checkAccess(cred, d, W_OK | X_OK)
      const now = this.now()
      const raw = await this.tree.get(direntKey(dir, name))
      let cookie: number
      if (raw) {
        const old = decodeDirent(raw)
        const victim = await this.getInode(old.ino)
        if (isDir(victim.mode)) throw fsError('EISDIR')
        checkSticky(cred, d, victim)
        cookie = old.cookie // the name keeps its place in a listing
        await this.dropLink(tx, victim, now)
      } else {
        cookie = d.nextCookie++
        tx.push([cookieKey(dir, cookie), recordCopy(name)])
      }
      inode.nlink = 1
      inode.parent = dir
      inode.ctime = now
      d.mtime = d.ctime = now
      tx.push([direntKey(dir, name), encodeDirent({ ino, type: S_IFREG, cookie })])
      putInode(tx, inode)
      putInode(tx, d)
      tx.push([orphanKey(ino), null])
      return inode
    })
  }

  // --- removing --------------------------------------------------------------

  async unlink(cred: Cred, parent: number, name: Buffer): Promise<void> {
    if (name.length > NAME_MAX) throw fsError('ENAMETOOLONG')
    await this.mutate(async (tx) => {
      const dir = await this.getInode(parent)
      if (!isDir(dir.mode)) throw fsError('ENOTDIR')
      checkAccess(cred, dir, W_OK | X_OK)
      if (isDotName(name)) throw fsError('EISDIR')
      const entryRaw = await this.tree.get(direntKey(parent, name))
      if (!entryRaw) throw fsError('ENOENT')
      const entry = decodeDirent(entryRaw)
      const victim = await this.getInode(entry.ino)
      if (isDir(victim.mode)) throw fsError('EISDIR')
      checkSticky(cred, dir, victim)
      const now = this.now()
      tx.push([direntKey(parent, name), null])
      tx.push([cookieKey(parent, entry.cookie), null])
      dir.mtime = dir.ctime = now
      putInode(tx, dir)
      await this.dropLink(tx, victim, now)
    })
  }

  async rmdir(cred: Cred, parent: number, name: Buffer): Promise<void> {
    if (name.length > NAME_MAX) throw fsError('ENAMETOOLONG')
    await this.mutate(async (tx) => {
      const dir = await this.getInode(parent)
      if (!isDir(dir.mode)) throw fsError('ENOTDIR')
      checkAccess(cred, dir, W_OK | X_OK)
      if (name.length === 1 && name[0] === 0x2e) throw fsError('EINVAL', 'cannot remove "."')
      if (isDotName(name)) throw fsError('ENOTEMPTY')
      const entryRaw = await this.tree.get(direntKey(parent, name))
      if (!entryRaw) throw fsError('ENOENT')
      const entry = decodeDirent(entryRaw)
      const victim = await this.getInode(entry.ino)
      if (!isDir(victim.mode)) throw fsError('ENOTDIR')
      checkSticky(cred, dir, victim)
      if (await this.hasEntries(victim.ino)) throw fsError('ENOTEMPTY')
      const now = this.now()
      tx.push([direntKey(parent, name), null])
      tx.push([cookieKey(parent, entry.cookie), null])
      dir.nlink--
      dir.mtime = dir.ctime = now
      putInode(tx, dir)
      victim.nlink = 0
      victim.ctime = now
      await this.retire(tx, victim)
    })
  }

  private async hasEntries(dirIno: number): Promise<boolean> {
    const prefix = cookiePrefix(dirIno)
    for await (const _ of this.tree.entries(prefix, prefixEnd(prefix))) return true
    return false
  }

  /** One name of `victim` is gone: drop a link, and the inode with its last one. */
  private async dropLink(tx: Change[], victim: Inode, now: Timespec): Promise<void> {
    victim.nlink--
    victim.ctime = now
    if (victim.nlink > 0) putInode(tx, victim)
    else await this.retire(tx, victim)
  }

  /** An inode without names: delete it now, or keep it as an orphan while something holds it open. */
  private async retire(tx: Change[], victim: Inode): Promise<void> {
    if (this.pins.has(victim.ino)) {
      putInode(tx, victim)
      tx.push([orphanKey(victim.ino), Buffer.alloc(0)])
      return
    }
    await this.purgeInto(tx, victim.ino)
  }

  /** Deletes an inode and everything it owns (extents, xattrs, pending bytes). */
  private async purgeInto(tx: Change[], ino: number): Promise<void> {
    tx.push([inodeKey(ino), null])
    tx.push([orphanKey(ino), null])
    for (const prefix of [extentPrefix(ino), xattrPrefix(ino)]) {
      for await (const [key] of this.tree.entries(prefix, prefixEnd(prefix))) tx.push([key, null])
    }
    const overlay = this.overlays.get(ino)
    if (overlay) {
      overlay.clear()
      this.overlays.delete(ino)
      this.dirty.delete(ino)
    }
  }

  // --- renaming --------------------------------------------------------------

  async rename(cred: Cred, parent: number, name: Buffer, newParent: number, newName: Buffer, flags = 0): Promise<void> {
    validName(newName)
    if (name.length > NAME_MAX) throw fsError('ENAMETOOLONG')
    if ((flags & ~(RENAME_NOREPLACE | RENAME_EXCHANGE)) !== 0 || flags === (RENAME_NOREPLACE | RENAME_EXCHANGE)) throw fsError('EINVAL', 'bad rename flags')
    if (isDotName(name) || isDotName(newName)) throw fsError(isDotName(name) ? 'EINVAL' : 'EEXIST')
    await this.mutate(async (tx) => {
      const srcDir = await this.getInode(parent)
      const dstDir = parent === newParent ? srcDir : await this.getInode(newParent)
      if (!isDir(srcDir.mode) || !isDir(dstDir.mode)) throw fsError('ENOTDIR')
      // A directory removed while a process still stands in it (the kernel marks it dead only when it removed
      // it itself; the CLI and the HTTP API go around it): a name moved into it would be lost with it.
      if (dstDir.nlink === 0) throw fsError('ENOENT', 'directory was removed')
      checkAccess(cred, srcDir, W_OK | X_OK)
      checkAccess(cred, dstDir, W_OK | X_OK)
      const srcRaw = await this.tree.get(direntKey(parent, name))
      if (!srcRaw) throw fsError('ENOENT')
      const srcEntry = decodeDirent(srcRaw)
      const src = await this.getInode(srcEntry.ino)
      const dstRaw = await this.tree.get(direntKey(newParent, newName))
      const dstEntry = dstRaw ? decodeDirent(dstRaw) : undefined
      const dst = dstEntry ? await this.getInode(dstEntry.ino) : undefined
      if (flags & RENAME_NOREPLACE && dst) throw fsError('EEXIST')
      if (flags & RENAME_EXCHANGE && !dst) throw fsError('ENOENT')
      checkSticky(cred, srcDir, src)
      if (dst) checkSticky(cred, dstDir, dst)
      // A directory cannot move into itself or below itself.
      if (isDir(src.mode) && parent !== newParent) await this.assertNotAncestor(src.ino, newParent)
      if (dst && flags & RENAME_EXCHANGE && isDir(dst.mode) && parent !== newParent) await this.assertNotAncestor(dst.ino, parent)
      if (dst && dst.ino === src.ino) return // two names of one inode: POSIX says do nothing
      // Moving a directory to another parent rewrites its "..": that needs write access to it.
      if (!cred.kernelChecked && isDir(src.mode) && parent !== newParent && !mayAccess(cred, src, W_OK)) throw fsError('EACCES')
      const now = this.now()
      const sameDir = parent === newParent
      if (flags & RENAME_EXCHANGE) {
        const d = dst!
        tx.push([direntKey(parent, name), encodeDirent({ ino: d.ino, type: d.mode & S_IFMT, cookie: srcEntry.cookie })])
        tx.push([direntKey(newParent, newName), encodeDirent({ ino: src.ino, type: src.mode & S_IFMT, cookie: dstEntry!.cookie })])
        if (!sameDir) {
          if (isDir(src.mode) !== isDir(d.mode)) {
            const delta = isDir(src.mode) ? 1 : -1
            dstDir.nlink += delta
            srcDir.nlink -= delta
          }
          src.parent = newParent
          d.parent = parent
        }
        src.ctime = d.ctime = now
        putInode(tx, src)
        putInode(tx, d)
      } else {
        if (dst) {
          if (isDir(src.mode) && !isDir(dst.mode)) throw fsError('ENOTDIR')
          if (!isDir(src.mode) && isDir(dst.mode)) throw fsError('EISDIR')
          if (isDir(dst.mode) && (await this.hasEntries(dst.ino))) throw fsError('ENOTEMPTY')
          tx.push([cookieKey(newParent, dstEntry!.cookie), null])
          if (isDir(dst.mode)) {
            dst.nlink = 0
            dst.ctime = now
            dstDir.nlink--
            await this.retire(tx, dst)
          } else {
            await this.dropLink(tx, dst, now)
          }
        }
        const cookie = dstDir.nextCookie++
        tx.push([direntKey(parent, name), null])
        tx.push([cookieKey(parent, srcEntry.cookie), null])
        tx.push([direntKey(newParent, newName), encodeDirent({ ino: src.ino, type: src.mode & S_IFMT, cookie })])
        tx.push([cookieKey(newParent, cookie), recordCopy(newName)])
        if (!sameDir && isDir(src.mode)) {
          srcDir.nlink--
          dstDir.nlink++
        }
        src.parent = newParent
        src.ctime = now
        putInode(tx, src)
      }
      srcDir.mtime = srcDir.ctime = now
      dstDir.mtime = dstDir.ctime = now
      putInode(tx, srcDir)
      if (!sameDir) putInode(tx, dstDir)
    })
  }

  private async assertNotAncestor(ancestor: number, dirIno: number): Promise<void> {
    let at = dirIno
    for (let depth = 0; depth < 10_000; depth++) {
      if (at === ancestor) throw fsError('EINVAL', 'cannot move a directory into itself')
      if (at === ROOT_INO) return
      at = (await this.getInode(at)).parent
    }
    throw fsError('ELOOP')
  }

  // --- attributes --------------------------------------------------------------

  async setattr(cred: Cred, ino: number, set: SetAttr): Promise<Inode> {
    // (uid_t)-1 means "unchanged" to chown(2): neither it nor anything wider can be an owner.
    for (const id of [set.uid, set.gid]) if (id !== undefined && !(Number.isInteger(id) && id >= 0 && id < 0xffff_ffff)) throw fsError('EINVAL', `owner ids run from 0 to 4294967294, not ${id}`)
    if (set.size !== undefined) {
      if (set.size < 0) throw fsError('EINVAL')
      if (set.size > MAX_FILE_SIZE) throw fsError('EFBIG')
    }
    return this.mutate(async (tx) => {
      const inode = await this.getInode(ino)
      const now = this.now()
      let changed = false
      if (set.mode !== undefined) {
        if (!cred.kernelChecked && !isOwnerOrRoot(cred, inode)) throw fsError('EPERM', 'only the owner may chmod')
        inode.mode = chmodResult(cred, inode, set.mode)
        changed = true
      }
      if (set.uid !== undefined || set.gid !== undefined) {
        const uid = set.uid ?? inode.uid
        const gid = set.gid ?? inode.gid
        if (!cred.kernelChecked && cred.uid !== 0) {
          if (uid !== inode.uid) throw fsError('EPERM', 'only root may change the owner')
          if (cred.uid !== inode.uid) throw fsError('EPERM', 'only the owner may change the group')
          if (gid !== inode.gid && !inGroup(cred, gid)) throw fsError('EPERM', 'not a member of that group')
        }
        if (!isDir(inode.mode) && (uid !== inode.uid || gid !== inode.gid)) {
          // Changing owner or group strips setuid, and setgid where it means "run as group".
          inode.mode &= ~S_ISUID
          if (inode.mode & 0o010) inode.mode &= ~S_ISGID
        }
        inode.uid = uid
        inode.gid = gid
        changed = true
      }
      if (set.atime !== undefined || set.mtime !== undefined) {
        const explicit = (set.atime !== undefined && set.atime !== 'now') || (set.mtime !== undefined && set.mtime !== 'now')
        if (!cred.kernelChecked && !isOwnerOrRoot(cred, inode)) {
          if (explicit) throw fsError('EPERM', 'only the owner may set explicit times')
          if (!mayAccess(cred, inode, W_OK)) throw fsError('EACCES')
        }
        if (set.atime !== undefined) inode.atime = set.atime === 'now' ? now : set.atime
        if (set.mtime !== undefined) inode.mtime = set.mtime === 'now' ? now : set.mtime
        changed = true
      }
      if (set.size !== undefined) {
        if (isDir(inode.mode)) throw fsError('EISDIR')
        if (!isReg(inode.mode)) throw fsError('EINVAL')
        checkAccess(cred, inode, W_OK)
        this.requireWritable()
        await this.truncateInto(inode, set.size, now, true)
        if (cred.uid !== 0 && !cred.kernelChecked) this.killSuid(inode)
        changed = true
      }
      if (set.killPriv) {
        this.killSuid(inode)
        changed = true
      }
      inode.ctime = set.ctime ?? now
      if (changed || set.ctime) putInode(tx, inode)
      return inode
    })
  }

  private killSuid(inode: Inode): void {
    inode.mode &= ~S_ISUID
    if (inode.mode & 0o010) inode.mode &= ~S_ISGID
  }

  /** Sets a file's size: drops extents and pending bytes beyond it (logged as one truncate record). */
  private async truncateInto(inode: Inode, size: number, now: Timespec, log: boolean): Promise<void> {
    if (log) this.wal!.append(REC.truncate, encodeTruncate(inode.ino, size, now))
    if (size < inode.size) {
      this.noteCut(inode.ino)
      this.overlays.get(inode.ino)?.truncate(size)
      await this.cutExtents(inode.ino, size, Number.MAX_SAFE_INTEGER)
    }
    inode.size = size
    inode.mtime = inode.ctime = now
  }

  private cutExtents(ino: number, start: number, end: number): Promise<void> {
    return cutExtentsIn(this.tree, ino, start, end)
  }

  // --- data --------------------------------------------------------------------

  /** Permission check for open(2); truncates with O_TRUNC. */
  async open(cred: Cred, ino: number, flags: number): Promise<Inode> {
    const inode = await this.getattr(ino)
    const acc = flags & 3
    const want = acc === 0 ? R_OK : acc === 1 ? W_OK : R_OK | W_OK
    if (isDir(inode.mode) && acc !== 0) throw fsError('EISDIR')
    checkAccess(cred, inode, want)
    if (acc !== 0 && this.readOnly) throw fsError('EROFS')
    if (flags & 0o1000 && acc !== 0 && isReg(inode.mode)) return this.setattr({ ...cred, kernelChecked: true }, ino, { size: 0 })
    return inode
  }

  /** The bytes of [offset, offset + length) cut to the file's size. The Buffer may be the blob cache's own: never modify it. */
  async read(ino: number, offset: number, length: number): Promise<Buffer> {
    const parts = await this.readParts(ino, offset, length)
    return parts.length === 1 ? parts[0] : Buffer.concat(parts)
  }

  /**
   * read() as parts to send back to back (a READ reply is written with
   * writev): a 1 MiB read usually spans two stored chunks, and its reply
   * need not copy them into one buffer first. The parts may be the blob
   * cache's own: never modify them.
   */
  async readParts(ino: number, offset: number, length: number): Promise<Buffer[]> {
    let plan: { extents: Extent[]; pieces: Piece[]; start: number; end: number; size: number }
    const read = this.reads.begin()
    try {
      plan = await this.lock.run(async () => {
        const inode = await this.getInode(ino)
        if (isDir(inode.mode)) throw fsError('EISDIR')
        const start = Math.min(offset, inode.size)
        const end = Math.min(inode.size, offset + length)
        if (end <= start) return { extents: [], pieces: [], start, end: start, size: inode.size }
        return { extents: await this.extentsIn(ino, start, end), pieces: this.overlays.get(ino)?.covering(start, end) ?? [], start, end, size: inode.size }
      })
      const sequential = plan.end > plan.start && this.readEnds.get(ino) === plan.start
      this.readEnds.set(ino, plan.end)
      if (sequential && plan.end < plan.size) void this.readAhead(ino, plan.end, Math.min(plan.size, plan.end + READ_AHEAD_BYTES))
      return await this.assembleParts(plan.start, plan.end, plan.extents, plan.pieces)
    } finally {
      this.reads.end(read)
    }
  }

  /**
   * lseek(2) SEEK_DATA (the first data at or after `offset`) and SEEK_HOLE
   * (the first hole at or after it; end of file counts as a hole). Data is
   * what extents and pending writes cover; unstored all-zero chunks read as
   * holes, which SEEK_DATA may skip by POSIX. ENXIO at or past the end.
   */
  async seek(ino: number, offset: number, whence: 'data' | 'hole'): Promise<number> {
    return this.lock.run(async () => {
      const inode = await this.getInode(ino)
      if (isDir(inode.mode)) throw fsError('EISDIR')
      if (offset < 0) throw fsError('EINVAL')
      if (offset >= inode.size) throw fsError('ENXIO')
      const ranges: [number, number][] = (await this.extentsIn(ino, offset, inode.size)).map((e) => [e.off, e.off + e.len])
      for (const p of this.overlays.get(ino)?.covering(offset, inode.size) ?? []) ranges.push([p.start, p.end])
      ranges.sort((a, b) => a[0] - b[0])
      let at = offset
      for (const [start, end] of ranges) {
        if (end <= at) continue
        if (whence === 'data') return Math.max(at, start)
        if (start > at) return at // a gap before this range
        at = end
      }
      if (whence === 'data') throw fsError('ENXIO')
      return Math.min(at, inode.size)
    })
  }

  /** Extents intersecting [start, end), in order. */
  extentsIn(ino: number, start: number, end: number): Promise<Extent[]> {
    return extentsInTree(this.tree, ino, start, end)
  }

  /**
   * Starts reading and decoding the stored chunks of [from, to) into the
   * decoded-chunk cache, for a reader going through a file front to back:
   * the next READs then find their chunks ready instead of waiting for the
   * portal (or the bucket) and decryption one request at a time. Errors are
   * left for the real read to report.
   */
  private async readAhead(ino: number, from: number, to: number): Promise<void> {
    try {
      const extents = await this.lock.run(() => this.extentsIn(ino, from, to))
      for (const e of extents) this.blobs.prefetch(e.blob)
    } catch {
      // the file changed or went away meanwhile
    }
  }

  /** Builds the bytes of [start, end) from extents, with pending pieces on top, into a buffer of their own; holes read as zeros. */
  private async assemble(start: number, end: number, extents: Extent[], pieces: Piece[]): Promise<Buffer> {
    const out = Buffer.alloc(Math.max(0, end - start))
    await this.assembleInto([{ start, end, extents, pieces }], [out])
    return out
  }

  /**
   * assemble() as parts: slices of the stored chunks, and zeros for holes.
   * With pending pieces on top, one assembled buffer.
   */
  private async assembleParts(start: number, end: number, extents: Extent[], pieces: Piece[]): Promise<Buffer[]> {
    // Many small extents (a file of 4 KiB patches) are joined: a reply must go out in one writev (IOV_MAX 1,024).
    if (pieces.length > 0 || extents.length > MAX_READ_PARTS) return [await this.assemble(start, end, extents, pieces)]
    const slices = await Promise.all(
      extents.map(async (e) => {
        const from = Math.max(start, e.off)
        const to = Math.min(end, e.off + e.len)
        if (to <= from) return undefined
        const blobFrom = e.blobOff + (from - e.off)
        const blobTo = e.blobOff + (to - e.off)
        // A read of a whole blob (a small file's) leaves it out of the decoded cache: the kernel keeps what it
        // returns in its page cache, so a copy here would serve no later read, and holding thousands of them
        // grew the heap page by page (a fault on this VM costs tens of µs: a fifth of a cold small-file read).
        const whole = blobFrom === 0 && blobTo === e.blob.raw
        return { from, data: await this.blobs.readRange(e.blob, blobFrom, blobTo, !whole) }
      }),
    )
    const parts: Buffer[] = []
    let at = start
    for (const slice of slices) {
      if (!slice) continue
      if (slice.from < at) return [await this.assemble(start, end, extents, pieces)] // overlapping extents: let assemble layer them
      if (slice.from > at) parts.push(zeros(slice.from - at))
      parts.push(slice.data)
      at = slice.from + slice.data.length
    }
    if (at < end) parts.push(zeros(end - at))
    return parts
  }

  /**
   * assemble() for many ranges at once, into buffers the caller provides, one
   * per range, of its length and zeroed (holes are not written): the flusher
   * assembles pieces straight into the memory its chunker and workers read.
   * Their pending pieces are read back from the log in one pass
   * (Wal.readEach coalesces nearby records), which is what a flush batch of
   * many small regions needs. `keep: false`: blobs read are not kept in the
   * decoded cache (see BlobStore.readRangeInto).
   */
  async assembleInto(ranges: { start: number; end: number; extents: Extent[]; pieces: Piece[] }[], out: Buffer[], keep = true): Promise<void> {
    await Promise.all(
      ranges.flatMap(({ start, end, extents }, k) =>
        extents.map(async (e) => {
          const from = Math.max(start, e.off)
          const to = Math.min(end, e.off + e.len)
          if (to <= from) return
          await this.blobs.readRangeInto(e.blob, e.blobOff + (from - e.off), e.blobOff + (to - e.off), out[k], from - start, keep)
        }),
      ),
    )
    const reads = ranges.flatMap((r, k) => r.pieces.map((p) => ({ p, into: out[k], at: p.start - r.start })))
    if (reads.length) {
      await this.wal!.readEach(
        reads.map((r) => r.p.loc),
        (k, payload) => {
          const { p, into, at } = reads[k]
          payload.copy(into, at, p.srcOff, p.srcOff + (p.end - p.start))
        },
      )
    }
  }

  /**
   * Writes `data` at `offset`. `data` may be a view of a buffer its owner
   * reuses as soon as this returns (the kernel request it arrived in): it is
   * copied, once, into its log record before the first await.
   */
  async write(cred: Cred, ino: number, offset: number, data: Uint8Array, options: { killPriv?: boolean } = {}): Promise<number> {
    if (offset < 0) throw fsError('EINVAL')
    if (offset + data.length > MAX_FILE_SIZE) throw fsError('EFBIG')
    this.requireWritable()
    const record = dataRecord(data)
    // Behind a slow disk the log's queue fills up: wait for it instead of holding ever more in memory.
    const room = this.wal!.room()
    if (room) await room
    const admitted = this.admit?.(data.length)
    const release = admitted instanceof Promise ? await admitted : admitted
    try {
      return await this.writeAdmitted(cred, ino, offset, record, options)
    } finally {
      release?.()
    }
  }

  private writeAdmitted(cred: Cred, ino: number, offset: number, record: Buffer, options: { killPriv?: boolean }): Promise<number> {
    const length = record.length - DATA_HEADER
    return this.lock.run(async () => {
      const inode = await this.getInode(ino)
      if (isDir(inode.mode)) throw fsError('EISDIR')
      if (!isReg(inode.mode)) throw fsError('EINVAL')
      if (length === 0) return 0
      const now = this.now()
      writeDataHeader(record, ino, offset, now)
      const loc = this.wal!.append(REC.data, record, true)
      this.applyWrite(inode, offset, length, loc, now)
      await this.storeInode(inode)
      if (inode.mode & (S_ISUID | S_ISGID) && (options.killPriv || (cred.uid !== 0 && !cred.kernelChecked))) {
        // A write by someone else strips setuid; the data record does not imply that, so log it.
        this.killSuid(inode)
        await this.storeInode(inode)
        this.wal!.append(REC.kv, encodeKv([[inodeKey(ino), encodeInode(inode)]]))
      }
      return length
    })
  }

  private applyWrite(inode: Inode, offset: number, length: number, loc: WalLocation, now: Timespec): void {
    this.overlayOf(inode.ino).insert(offset, offset + length, loc, DATA_HEADER)
    if (offset + length > inode.size) inode.size = offset + length
    inode.mtime = inode.ctime = now
    if (!this.dirty.has(inode.ino)) this.onDirty?.(inode.ino)
    this.dirty.set(inode.ino, Date.now())
  }

  async fallocate(cred: Cred, ino: number, mode: number, offset: number, length: number): Promise<void> {
    if (offset < 0 || length <= 0) throw fsError('EINVAL')
    if (offset + length > MAX_FILE_SIZE) throw fsError('EFBIG')
    if (mode & ~(FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE)) throw fsError('EOPNOTSUPP')
    if (mode & FALLOC_FL_PUNCH_HOLE && !(mode & FALLOC_FL_KEEP_SIZE)) throw fsError('EOPNOTSUPP')
    this.requireWritable()
    await this.mutate(async (tx) => {
      const inode = await this.getInode(ino)
      if (isDir(inode.mode)) throw fsError('EISDIR')
      if (!isReg(inode.mode)) throw fsError('ENODEV')
      checkAccess(cred, inode, W_OK)
      const now = this.now()
      if (mode & (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE)) {
        const end = Math.min(offset + length, mode & FALLOC_FL_KEEP_SIZE ? inode.size : offset + length)
        if (end > offset) {
          this.wal!.append(REC.punch, encodePunch(ino, offset, end - offset, now))
          await this.applyPunch(ino, offset, end)
        }
      }
      inode.mtime = inode.ctime = now // as ext4 does for every mode, preallocation within the file included
      if (!(mode & FALLOC_FL_KEEP_SIZE) && offset + length > inode.size) {
        await this.truncateInto(inode, offset + length, now, true)
      }
      putInode(tx, inode)
    })
  }

  private async applyPunch(ino: number, start: number, end: number): Promise<void> {
    this.noteCut(ino)
    this.overlays.get(ino)?.remove(start, end)
    await this.cutExtents(ino, start, end)
  }

  // --- directories -------------------------------------------------------------

  /**
   * Entries after `cookie` (0 starts at ".", 1 after ".", 2 after ".."), at
   * most `limit`. Cookies are per-entry and never reused, so a listing
   * continues correctly while the directory changes.
   */
  async readdir(cred: Cred, ino: number, cookie: number, limit = 1024): Promise<DirEntry[]> {
    return this.lock.run(async () => {
      const dir = await this.getInode(ino)
      if (!isDir(dir.mode)) throw fsError('ENOTDIR')
      checkAccess(cred, dir, R_OK)
      const out: DirEntry[] = []
      if (cookie < 1) out.push({ name: Buffer.from('.'), ino, type: S_IFDIR, next: 1 })
      if (cookie < 2 && out.length < limit) out.push({ name: Buffer.from('..'), ino: dir.parent, type: S_IFDIR, next: 2 })
      const prefix = cookiePrefix(ino)
      for await (const [key, name] of this.tree.entries(cookieKey(ino, Math.max(cookie + 1, FIRST_COOKIE)), prefixEnd(prefix))) {
        if (out.length >= limit) break
        const entryRaw = await this.tree.get(direntKey(ino, name))
        if (!entryRaw) continue
        const entry = decodeDirent(entryRaw)
        out.push({ name, ino: entry.ino, type: entry.type, next: readU64(key, 9) })
      }
      return out
    })
  }

  // --- extended attributes -------------------------------------------------------

  private xattrAllowed(cred: Cred, inode: Inode, name: Buffer, write: boolean): void {
    const text = name.toString('latin1')
    if (text.startsWith('user.')) {
      // user.* lives only on regular files and directories (like ext4).
      if (!isReg(inode.mode) && !isDir(inode.mode)) throw fsError(write ? 'EPERM' : 'ENODATA')
      checkAccess(cred, inode, write ? W_OK : R_OK)
    } else if (text.startsWith('trusted.')) {
      if (cred.uid !== 0) throw fsError(write ? 'EPERM' : 'ENODATA')
    } else if (text.startsWith('security.')) {
      if (write && !cred.kernelChecked && cred.uid !== 0 && cred.uid !== inode.uid) throw fsError('EPERM')
    } else if (text.startsWith('system.')) {
      throw fsError('EOPNOTSUPP', 'POSIX ACLs are not supported')
    } else {
      throw fsError('EOPNOTSUPP', 'unknown xattr namespace')
    }
  }

  async getxattr(cred: Cred, ino: number, name: Buffer): Promise<Buffer> {
    const value = await this.tryGetxattr(cred, ino, name)
    if (!value) throw fsError('ENODATA')
    return value
  }

  /**
   * getxattr(), with undefined for an attribute the file does not have: the
   * kernel asks for "security.capability" before a new file's first write
   * and every chown.
   */
  async tryGetxattr(cred: Cred, ino: number, name: Buffer): Promise<Buffer | undefined> {
    if (name.length > XATTR_NAME_MAX) throw fsError('ERANGE')
    return this.lock.run(async () => {
      const inode = await this.getInode(ino)
      this.xattrAllowed(cred, inode, name, false)
      return this.tree.get(xattrKey(ino, name))
    })
  }

  async setxattr(cred: Cred, ino: number, name: Buffer, value: Buffer, flags = 0): Promise<void> {
    if (name.length === 0 || name.length > XATTR_NAME_MAX) throw fsError('ERANGE')
    if (value.length > XATTR_SIZE_MAX) throw fsError('E2BIG')
    await this.mutate(async (tx) => {
      const inode = await this.getInode(ino)
      this.xattrAllowed(cred, inode, name, true)
      const exists = (await this.tree.get(xattrKey(ino, name))) !== undefined
      if (flags & XATTR_CREATE && exists) throw fsError('EEXIST')
      if (flags & XATTR_REPLACE && !exists) throw fsError('ENODATA')
      inode.ctime = this.now()
      tx.push([xattrKey(ino, name), recordCopy(value)])
      putInode(tx, inode)
    })
  }

  async listxattr(cred: Cred, ino: number): Promise<Buffer[]> {
    return this.lock.run(async () => {
      const inode = await this.getInode(ino)
      const prefix = xattrPrefix(ino)
      const out: Buffer[] = []
      for await (const [key] of this.tree.entries(prefix, prefixEnd(prefix))) {
        const name = Buffer.from(key.slice(prefix.length), 'latin1')
        if (name.toString('latin1').startsWith('trusted.') && cred.uid !== 0) continue
        out.push(name)
      }
      void inode
      return out
    })
  }

  async removexattr(cred: Cred, ino: number, name: Buffer): Promise<void> {
    if (name.length > XATTR_NAME_MAX) throw fsError('ERANGE')
    await this.mutate(async (tx) => {
      const inode = await this.getInode(ino)
      this.xattrAllowed(cred, inode, name, true)
      if (!(await this.tree.get(xattrKey(ino, name)))) throw fsError('ENODATA')
      inode.ctime = this.now()
      tx.push([xattrKey(ino, name), null])
      putInode(tx, inode)
    })
  }

  // --- whole filesystem ------------------------------------------------------------

  async statfs(): Promise<StatFs> {
    const sb = await this.lock.run(() => this.getSuper())
    const blockSize = 4096
    const blocks = 2 ** 40 // 4 PiB: object storage has no meaningful capacity
    return { blockSize, blocks, blocksFree: blocks, files: 2 ** 32, filesFree: 2 ** 32 - sb.nextIno, nameMax: NAME_MAX }
  }

  /** Keeps an inode alive while the kernel or a handle refers to it (unlinked-but-open files). */
  pin(ino: number): void {
    this.pins.set(ino, (this.pins.get(ino) ?? 0) + 1)
  }

  /** Drops references; an unlinked inode is deleted when its last reference goes. */
  async unpin(ino: number, count = 1): Promise<void> {
    const left = (this.pins.get(ino) ?? 0) - count
    if (left > 0) {
      this.pins.set(ino, left)
      return
    }
    this.pins.delete(ino)
    if (this.readOnly) return
    await this.mutate(async (tx) => {
      if (!(await this.tree.get(orphanKey(ino)))) return
      const inode = await this.tryInode(ino)
      if (inode && inode.nlink === 0) await this.purgeInto(tx, ino)
    })
  }

  /** Deletes orphans left by a previous session (nothing holds them open any more). */
  async purgeOrphans(): Promise<number> {
    const orphans: number[] = []
    for await (const [key] of this.tree.entries(orphanPrefix, prefixEnd(orphanPrefix))) orphans.push(readU64(key, 1))
    for (const ino of orphans) {
      await this.mutate(async (tx) => {
        if (!this.pins.has(ino)) await this.purgeInto(tx, ino)
      })
    }
    return orphans.length
  }

  // --- log replay ---------------------------------------------------------------------

  /** Re-applies one log record after a crash (the same effects as the live operation, not logged again). */
  async replay(record: WalRecord): Promise<void> {
    await this.lock.run(async () => {
      switch (record.kind) {
        case REC.kv:
        case REC.kvMsgpack:
          for (const [key, val] of (record.kind === REC.kv ? decodeKv : decodeKvMsgpack)(record.payload)) {
            if (val) await this.tree.put(key, val)
            else await this.tree.delete(key)
          }
          this.superblock = undefined
          this.inodeCache.clear()
          return
        case REC.data: {
          const h = decodeDataHeader(record.payload)
          const inode = await this.tryInode(h.ino)
          if (!inode) return
          this.applyWrite(inode, h.off, h.length, record.loc, h.time)
          await this.storeInode(inode)
          return
        }
        case REC.truncate: {
          const t = decodeTruncate(record.payload)
          const inode = await this.tryInode(t.ino)
          if (!inode) return
          await this.truncateInto(inode, t.size, t.time, false)
          await this.storeInode(inode)
          return
        }
        case REC.punch: {
          const p = decodePunch(record.payload)
          await this.applyPunch(p.ino, p.off, p.off + p.len)
          return
        }
        case REC.extents:
          await this.applyExtents(decodeExtents(record.payload), false)
          return
        default:
          throw new Error(`unknown log record kind ${record.kind} at seq ${record.seq}`)
      }
    })
  }

  /**
   * Replaces the pending bytes of [start, end) up to r.maxSeq by stored
   * extents (log replay; the flusher does the same in two steps for many
   * regions at once). Callers hold the lock.
   */
  async applyExtents(r: ExtentsRecord, log: boolean): Promise<void> {
    await this.storeExtents(r, log)
    this.dropStored(r.ino, [r])
  }

  /**
   * Puts a stored region's extents in place of what the file had there (the
   * pieces it came from stay pending until dropStored).
   */
  async storeExtents(r: ExtentsRecord, log: boolean): Promise<void> {
    if (log) this.wal!.append(REC.extents, encodeExtents(r))
    await putExtentsIn(this.tree, r)
  }

  /**
   * What a commit stores, taken under the lock: the tree as it is now (a
   * fork: the live tree goes on changing) and a copy of every file's pending
   * pieces. Pieces point into log records, which never change, so the copy
   * stays valid however the live files change meanwhile.
   */
  freezePending(): { tree: Tree; overlays: Map<number, Overlay> } {
    const overlays = new Map<number, Overlay>()
    for (const [ino, overlay] of this.overlays) {
      if (overlay.isEmpty) continue
      overlays.set(ino, overlay.copy())
      // The copied pieces keep their log files, even once the live ones no longer need them.
      for (const p of overlay.pieces) this.frozenLogFiles.add(p.loc.file)
    }
    return { tree: this.tree.fork(), overlays }
  }

  /** The commit that froze the volume has stored its pieces. */
  releaseFrozen(): void {
    this.frozenLogFiles.clear()
  }

  /** Whether pending pieces (live, or frozen by a commit) still read from this log file. */
  logFileInUse(file: number): boolean {
    return this.walFileRefs.has(file) || this.frozenLogFiles.has(file)
  }

  /** A flush starts planning: returns the clock to give cutSince when it applies. */
  beginFlush(): number {
    this.flushesInFlight++
    return this.cutClock
  }

  endFlush(): void {
    // With no flush between planning and applying, no cut can matter to one.
    if (--this.flushesInFlight === 0) this.lastCut.clear()
  }

  /** Whether the file lost bytes (truncate down, punch) after `clock` (from beginFlush). */
  cutSince(ino: number, clock: number): boolean {
    return (this.lastCut.get(ino) ?? 0) > clock
  }

  private noteCut(ino: number): void {
    if (this.flushesInFlight > 0) this.lastCut.set(ino, ++this.cutClock)
  }

  /** Drops a file's pending pieces that stored regions (sorted by start, disjoint) now hold. */
  dropStored(ino: number, regions: { start: number; end: number; maxSeq: number }[]): void {
    const overlay = this.overlays.get(ino)
    if (!overlay) return
    overlay.removeStored(regions)
    if (overlay.isEmpty) {
      this.overlays.delete(ino)
      this.dirty.delete(ino)
    }
  }

  // --- internals ------------------------------------------------------------------------

  private requireWritable(): void {
    if (this.failure) throw fsError('EIO', this.failure.message)
    if (this.readOnly) throw fsError('EROFS')
  }

  private overlayOf(ino: number): Overlay {
    let overlay = this.overlays.get(ino)
    if (!overlay) {
      overlay = new Overlay({
        added: (p) => {
          this.pendingBytes += p.end - p.start
          this.walFileRefs.set(p.loc.file, (this.walFileRefs.get(p.loc.file) ?? 0) + 1)
        },
        removed: (p) => {
          this.pendingBytes -= p.end - p.start
          const n = (this.walFileRefs.get(p.loc.file) ?? 1) - 1
          if (n > 0) this.walFileRefs.set(p.loc.file, n)
          else this.walFileRefs.delete(p.loc.file)
        },
      })
      this.overlays.set(ino, overlay)
    }
    return overlay
  }

  private async getSuper(): Promise<Superblock> {
    if (!this.superblock) {
      const raw = await this.tree.get(superKey)
      if (!raw) throw fsError('EIO', 'volume has no superblock')
      this.superblock = decodeSuper(raw)
    }
    return this.superblock
  }

  /**
   * Runs a metadata change under the lock: `fn` reads what it needs and
   * queues key changes; they are then applied to the tree and logged as one
   * absolute record. A failure before that point changes nothing.
   */
  private async mutate<T>(fn: (tx: Change[]) => Promise<T>): Promise<T> {
    this.requireWritable()
    return this.lock.run(async () => {
      const tx: Change[] = []
      let result: T
      try {
        result = await fn(tx)
      } catch (err) {
        this.superblock = undefined // fn may have advanced nextIno in the cached copy
        throw err
      }
      if (tx.length === 0) return result
      // Load every page the change touches first, so applying it cannot stop half-way.
      for (const [key] of tx) if (!this.tree.isResident(key)) await this.tree.get(key)
      for (const [key, val, inode] of tx) {
        if (!val) await this.tree.delete(key)
        else if (!this.tree.putResident(key, val)) await this.tree.put(key, val)
        if (key.charCodeAt(0) === KIND.inode) {
          // Cache the new record rather than drop the old: lru-cache's delete of its last entry clears
          // every slot (O(max)), and a volume being filled keeps its cache near one entry that way.
          const ino = readU64(key, 1)
          if (val) this.inodeCache.set(ino, inode ?? decodeInode(ino, val))
          else this.inodeCache.delete(ino)
        }
      }
      this.wal!.append(REC.kv, encodeKv(tx))
      return result
    })
  }
}
