/**
 * The Linux FUSE kernel protocol (include/uapi/linux/fuse.h), the subset s0fs
 * speaks: opcodes, INIT flags, and the byte layouts of requests and replies.
 * All integers are little-endian.
 */

import { readU64, writeU64 } from '../util/u64.js'

export { readS64, readU64, writeU64 } from '../util/u64.js'

export const FUSE_KERNEL_VERSION = 7
/** The minor version s0fs implements; the session uses min(this, kernel's). */
export const FUSE_KERNEL_MINOR_VERSION = 33
export const FUSE_ROOT_ID = 1

export const Op = {
  LOOKUP: 1,
  FORGET: 2,
  GETATTR: 3,
  SETATTR: 4,
  READLINK: 5,
  SYMLINK: 6,
  MKNOD: 8,
  MKDIR: 9,
  UNLINK: 10,
  RMDIR: 11,
  RENAME: 12,
  LINK: 13,
  OPEN: 14,
  READ: 15,
  WRITE: 16,
  STATFS: 17,
  RELEASE: 18,
  FSYNC: 20,
  SETXATTR: 21,
  GETXATTR: 22,
  LISTXATTR: 23,
  REMOVEXATTR: 24,
  FLUSH: 25,
  INIT: 26,
  OPENDIR: 27,
  READDIR: 28,
  RELEASEDIR: 29,
  FSYNCDIR: 30,
  GETLK: 31,
  SETLK: 32,
  SETLKW: 33,
  ACCESS: 34,
  CREATE: 35,
  INTERRUPT: 36,
  BMAP: 37,
  DESTROY: 38,
  IOCTL: 39,
  POLL: 40,
  BATCH_FORGET: 42,
  FALLOCATE: 43,
  READDIRPLUS: 44,
  RENAME2: 45,
  LSEEK: 46,
  COPY_FILE_RANGE: 47,
  SYNCFS: 50,
  TMPFILE: 51,
} as const

export const OP_NAMES: Record<number, string> = Object.fromEntries(Object.entries(Op).map(([k, v]) => [v, k.toLowerCase()]))

export const Init = {
  ASYNC_READ: 1 << 0,
  POSIX_LOCKS: 1 << 1,
  ATOMIC_O_TRUNC: 1 << 3,
  EXPORT_SUPPORT: 1 << 4,
  BIG_WRITES: 1 << 5,
  DONT_MASK: 1 << 6,
  FLOCK_LOCKS: 1 << 10,
  AUTO_INVAL_DATA: 1 << 12,
  DO_READDIRPLUS: 1 << 13,
  READDIRPLUS_AUTO: 1 << 14,
  ASYNC_DIO: 1 << 15,
  WRITEBACK_CACHE: 1 << 16,
  NO_OPEN_SUPPORT: 1 << 17,
  PARALLEL_DIROPS: 1 << 18,
  HANDLE_KILLPRIV: 1 << 19,
  MAX_PAGES: 1 << 22,
  CACHE_SYMLINKS: 1 << 23,
  NO_OPENDIR_SUPPORT: 1 << 24,
  HANDLE_KILLPRIV_V2: 1 << 28,
} as const

/** WRITE write_flags: the writer is not privileged, so setuid/setgid must go (killpriv v2). */
export const FUSE_WRITE_KILL_SUIDGID = 1 << 2

export const FATTR = {
  MODE: 1 << 0,
  UID: 1 << 1,
  GID: 1 << 2,
  SIZE: 1 << 3,
  ATIME: 1 << 4,
  MTIME: 1 << 5,
  FH: 1 << 6,
  ATIME_NOW: 1 << 7,
  MTIME_NOW: 1 << 8,
  LOCKOWNER: 1 << 9,
  CTIME: 1 << 10,
  KILL_SUIDGID: 1 << 11,
} as const

export const NOTIFY = { INVAL_INODE: 2, INVAL_ENTRY: 3 } as const

export const IN_HEADER = 40
export const OUT_HEADER = 16
export const ATTR_SIZE = 88
export const ENTRY_OUT = 40 + ATTR_SIZE
export const ATTR_OUT = 16 + ATTR_SIZE
/** struct fuse_open_out: fh, open_flags, backing_id. */
export const OPEN_OUT = 16
/** fuse_open_out.open_flags: keep the page cache across opens. */
export const FOPEN_KEEP_CACHE = 1 << 1
export const DIRENT_HEADER = 24

/** The fields of a request header. */
export interface Header {
  len: number
  opcode: number
  unique: bigint
  nodeid: number
  uid: number
  gid: number
  pid: number
}

export function readHeader(buf: Buffer): Header {
  return {
    len: buf.readUInt32LE(0),
    opcode: buf.readUInt32LE(4),
    unique: buf.readBigUInt64LE(8),
    nodeid: readU64(buf, 16),
    uid: buf.readUInt32LE(24),
    gid: buf.readUInt32LE(28),
    pid: buf.readUInt32LE(32),
  }
}

/** What a reply needs to describe an inode. */
export interface AttrSource {
  ino: number
  mode: number
  uid: number
  gid: number
  nlink: number
  size: number
  rdev: number
  atime: { s: number; ns: number }
  mtime: { s: number; ns: number }
  ctime: { s: number; ns: number }
}

/** Writes struct fuse_attr at `off`. */
export function writeAttr(buf: Buffer, off: number, a: AttrSource): void {
  writeU64(buf, off, a.ino)
  writeU64(buf, off + 8, a.size)
  writeU64(buf, off + 16, Math.ceil(a.size / 512))
  writeU64(buf, off + 24, a.atime.s)
  writeU64(buf, off + 32, a.mtime.s)
  writeU64(buf, off + 40, a.ctime.s)
  buf.writeUInt32LE(a.atime.ns, off + 48)
  buf.writeUInt32LE(a.mtime.ns, off + 52)
  buf.writeUInt32LE(a.ctime.ns, off + 56)
  buf.writeUInt32LE(a.mode >>> 0, off + 60)
  buf.writeUInt32LE(a.nlink, off + 64)
  buf.writeUInt32LE(a.uid, off + 68)
  buf.writeUInt32LE(a.gid, off + 72)
  buf.writeUInt32LE(a.rdev, off + 76)
  buf.writeUInt32LE(4096, off + 80) // blksize
  buf.writeUInt32LE(0, off + 84) // flags
}

/** Writes struct fuse_entry_out at `off`: node, generation, timeouts, attributes. */
export function writeEntry(buf: Buffer, off: number, a: AttrSource | undefined, entryTtl: number, attrTtl: number): void {
  writeU64(buf, off, a ? a.ino : 0)
  writeU64(buf, off + 8, 0) // generation: inode numbers are never reused within a volume
  writeTtl(buf, off + 16, off + 32, entryTtl)
  writeTtl(buf, off + 24, off + 36, attrTtl)
  if (a) writeAttr(buf, off + 40, a)
  else buf.fill(0, off + 40, off + ENTRY_OUT)
}

export function writeTtl(buf: Buffer, secAt: number, nsecAt: number, seconds: number): void {
  const s = Math.floor(seconds)
  writeU64(buf, secAt, s)
  buf.writeUInt32LE(Math.floor((seconds - s) * 1e9), nsecAt)
}

/** Bytes a directory entry takes in a READDIR reply (8-byte aligned). */
export function direntSize(nameLength: number): number {
  return (DIRENT_HEADER + nameLength + 7) & ~7
}

/** Writes struct fuse_dirent at `off`; returns the bytes used. */
export function writeDirent(buf: Buffer, off: number, ino: number, next: number, type: number, name: Buffer): number {
  const size = direntSize(name.length)
  writeU64(buf, off, ino)
  writeU64(buf, off + 8, next)
  buf.writeUInt32LE(name.length, off + 16)
  buf.writeUInt32LE(type >>> 12, off + 20) // DT_* = S_IFMT >> 12
  name.copy(buf, off + DIRENT_HEADER)
  buf.fill(0, off + DIRENT_HEADER + name.length, off + size)
  return size
}

/** A NUL-terminated string in a request body, copied out (the request buffer is reused). */
export function cString(buf: Buffer, start: number): { value: Buffer; end: number } {
  const nul = buf.indexOf(0, start)
  const end = nul < 0 ? buf.length : nul
  return { value: Buffer.from(buf.subarray(start, end)), end: end + 1 }
}
