import { Packr } from 'msgpackr'
import type { BlobRef } from '../blob/index.js'
import { RecordSlab } from '../util/record-slab.js'

/**
 * How the filesystem lays its records out in the metadata tree. Keys are
 * binary strings: a one-byte kind, then big-endian integers, so that all
 * records of one inode (and all entries of one directory) are adjacent and
 * ordered.
 *
 *   00                          superblock
 *   01 ino                      inode
 *   02 parent name              directory entry → child inode, cookie
 *   03 parent cookie            directory order (stable readdir offsets) → name
 *   04 ino offset               file extent → blob slice
 *   05 ino name                 extended attribute → value
 *   06 ino                      orphan: unlinked while still open
 */

const packr = new Packr({ useRecords: false })

/** Records live in the tree as long as their page does: they get slabs of their own (see RecordSlab). */
const slab = new RecordSlab()

/**
 * Records are msgpack arrays of numbers and byte strings, written here
 * directly rather than through msgpackr (~1 µs a record, and an inode record
 * is written on every write and setattr). The bytes are exactly msgpackr's
 * (test/unit/records.test.ts); msgpackr still decodes them.
 */
export function packRecord(row: readonly (number | Uint8Array)[]): Buffer {
  if (row.length >= 16) throw new RangeError('packRecord: rows of up to 15 fields')
  let size = 1
  for (const field of row) size += typeof field === 'number' ? numberSize(field) : binSize(field.length) + field.length
  const out = slab.alloc(size)
  out[0] = 0x90 | row.length
  let at = 1
  for (const field of row) at = typeof field === 'number' ? writeNumber(out, at, field) : writeBin(out, at, field)
  return out
}

/** A copy of `bytes` to keep in the tree as a value (a name, an attribute's value), cut from the records' slab. */
export function recordCopy(bytes: Uint8Array): Buffer {
  const out = slab.alloc(bytes.length)
  out.set(bytes)
  return out
}

function numberSize(n: number): number {
  if (n >>> 0 === n) return n < 0x80 ? 1 : n < 0x100 ? 2 : n < 0x10000 ? 3 : 5
  if (n >> 0 === n) return n >= -0x20 ? 1 : n >= -0x80 ? 2 : n >= -0x8000 ? 3 : 5
  return 9 // float64, as msgpackr writes every number beyond 32 bits and every fraction
}

/** Writes a number as msgpackr does: the smallest integer form within 32 bits, float64 beyond. */
function writeNumber(out: Buffer, at: number, n: number): number {
  if (n >>> 0 === n || n >> 0 === n) {
    if (n >= -0x20 && n < 0x80) {
      out[at] = n & 0xff // positive or negative fixint
      return at + 1
    }
    const signed = n < 0
    if (signed ? n >= -0x80 : n < 0x100) {
      out[at] = signed ? 0xd0 : 0xcc
      out[at + 1] = n & 0xff
      return at + 2
    }
    if (signed ? n >= -0x8000 : n < 0x10000) {
      out[at] = signed ? 0xd1 : 0xcd
      out[at + 1] = (n >> 8) & 0xff
      out[at + 2] = n & 0xff
      return at + 3
    }
    out[at] = signed ? 0xd2 : 0xce
    out[at + 1] = (n >>> 24) & 0xff
    out[at + 2] = (n >>> 16) & 0xff
    out[at + 3] = (n >>> 8) & 0xff
    out[at + 4] = n & 0xff
    return at + 5
  }
  out[at] = 0xcb
  return out.writeDoubleBE(n, at + 1)
}

const binSize = (length: number) => (length < 0x100 ? 2 : length < 0x10000 ? 3 : 5)

function writeBin(out: Buffer, at: number, bytes: Uint8Array): number {
  const length = bytes.length
  if (length < 0x100) at = out.writeUInt8(length, out.writeUInt8(0xc4, at))
  else if (length < 0x10000) at = out.writeUInt16BE(length, out.writeUInt8(0xc5, at))
  else at = out.writeUInt32BE(length, out.writeUInt8(0xc6, at))
  out.set(bytes, at)
  return at + length
}

export const KIND = { super: 0, inode: 1, dirent: 2, cookie: 3, extent: 4, xattr: 5, orphan: 6 } as const

export const ROOT_INO = 1
/** Cookies 1 and 2 are "." and ".."; real entries start here. */
export const FIRST_COOKIE = 3

function u64(n: number): string {
  const hi = Math.floor(n / 0x1_0000_0000)
  const lo = n >>> 0
  return String.fromCharCode(hi >>> 24, (hi >>> 16) & 255, (hi >>> 8) & 255, hi & 255, lo >>> 24, (lo >>> 16) & 255, (lo >>> 8) & 255, lo & 255)
}

export function readU64(key: string, at: number): number {
  let hi = 0
  let lo = 0
  for (let i = 0; i < 4; i++) hi = hi * 256 + key.charCodeAt(at + i)
  for (let i = 4; i < 8; i++) lo = lo * 256 + key.charCodeAt(at + i)
  return hi * 0x1_0000_0000 + lo
}

const K_SUPER = String.fromCharCode(KIND.super)
const K_INODE = String.fromCharCode(KIND.inode)
const K_DIRENT = String.fromCharCode(KIND.dirent)
const K_COOKIE = String.fromCharCode(KIND.cookie)
const K_EXTENT = String.fromCharCode(KIND.extent)
const K_XATTR = String.fromCharCode(KIND.xattr)
const K_ORPHAN = String.fromCharCode(KIND.orphan)

export const superKey = K_SUPER
export const inodeKey = (ino: number) => K_INODE + u64(ino)
export const direntKey = (parent: number, name: Buffer) => K_DIRENT + u64(parent) + name.toString('latin1')
export const direntPrefix = (parent: number) => K_DIRENT + u64(parent)
export const cookieKey = (parent: number, cookie: number) => K_COOKIE + u64(parent) + u64(cookie)
export const cookiePrefix = (parent: number) => K_COOKIE + u64(parent)
export const extentKey = (ino: number, offset: number) => K_EXTENT + u64(ino) + u64(offset)
export const extentPrefix = (ino: number) => K_EXTENT + u64(ino)
export const xattrKey = (ino: number, name: Buffer) => K_XATTR + u64(ino) + name.toString('latin1')
export const xattrPrefix = (ino: number) => K_XATTR + u64(ino)
export const orphanKey = (ino: number) => K_ORPHAN + u64(ino)
export const orphanPrefix = K_ORPHAN
/** The smallest key greater than every key that starts with `prefix` (byte-string increment). */
export function prefixEnd(prefix: string): string {
  let i = prefix.length - 1
  while (i >= 0 && prefix.charCodeAt(i) === 0xff) i--
  if (i < 0) return '\uffff'
  return prefix.slice(0, i) + String.fromCharCode(prefix.charCodeAt(i) + 1)
}

// --- values ------------------------------------------------------------------

export interface Superblock {
  nextIno: number
  created: number
}

/** A timestamp as seconds and nanoseconds (a JS number cannot hold nanoseconds since 1970). */
export interface Timespec {
  s: number
  ns: number
}

export interface Inode {
  ino: number
  mode: number
  uid: number
  gid: number
  nlink: number
  size: number
  atime: Timespec
  mtime: Timespec
  ctime: Timespec
  rdev: number
  /** Directories: parent inode. Other files: the parent of the first link (a hint for path reports). */
  parent: number
  /** Directories: the next readdir cookie to hand out. */
  nextCookie: number
  /** Symlinks: the target, byte for byte. */
  target?: Buffer
}

export function encodeSuper(s: Superblock): Buffer {
  return packRecord([s.nextIno, s.created])
}

export function decodeSuper(b: Buffer): Superblock {
  const [nextIno, created] = packr.unpack(b) as [number, number]
  return { nextIno, created }
}

export function encodeInode(i: Inode): Buffer {
  const row: (number | Buffer)[] = [i.mode, i.uid, i.gid, i.nlink, i.size, i.atime.s, i.atime.ns, i.mtime.s, i.mtime.ns, i.ctime.s, i.ctime.ns, i.rdev, i.parent, i.nextCookie]
  if (i.target) row.push(i.target)
  return packRecord(row)
}

export function decodeInode(ino: number, b: Buffer): Inode {
  const r = packr.unpack(b) as unknown[]
  const inode: Inode = {
    ino,
    mode: r[0] as number,
    uid: r[1] as number,
    gid: r[2] as number,
    nlink: r[3] as number,
    size: r[4] as number,
    atime: { s: r[5] as number, ns: r[6] as number },
    mtime: { s: r[7] as number, ns: r[8] as number },
    ctime: { s: r[9] as number, ns: r[10] as number },
    rdev: r[11] as number,
    parent: r[12] as number,
    nextCookie: r[13] as number,
  }
  if (r[14]) inode.target = Buffer.from(r[14] as Uint8Array)
  return inode
}

export interface Dirent {
  ino: number
  /** File type bits (mode & S_IFMT), so readdir needs no inode lookups. */
  type: number
  cookie: number
}

export function encodeDirent(d: Dirent): Buffer {
  return packRecord([d.ino, d.type, d.cookie])
}

export function decodeDirent(b: Buffer): Dirent {
  const [ino, type, cookie] = packr.unpack(b) as [number, number, number]
  return { ino, type, cookie }
}

/** Bytes [off, off+len) of the file are bytes [blobOff, blobOff+len) of a blob. */
export interface Extent {
  off: number
  len: number
  blob: BlobRef
  blobOff: number
}

export function encodeExtent(e: Extent): Buffer {
  return packRecord([e.len, e.blob.id, Buffer.from(e.blob.seg, 'hex'), e.blob.off, e.blob.len, e.blob.raw, e.blobOff])
}

export function decodeExtent(off: number, b: Buffer): Extent {
  const r = packr.unpack(b) as [number, Uint8Array, Uint8Array, number, number, number, number]
  return {
    off,
    len: r[0],
    blob: { id: Buffer.from(r[1]), seg: Buffer.from(r[2]).toString('hex'), off: r[3], len: r[4], raw: r[5] },
    blobOff: r[6],
  }
}

// --- file types ---------------------------------------------------------------

export const S_IFMT = 0o170000
export const S_IFSOCK = 0o140000
export const S_IFLNK = 0o120000
export const S_IFREG = 0o100000
export const S_IFBLK = 0o060000
export const S_IFDIR = 0o040000
export const S_IFCHR = 0o020000
export const S_IFIFO = 0o010000
export const S_ISUID = 0o4000
export const S_ISGID = 0o2000
export const S_ISVTX = 0o1000

export const isDir = (mode: number) => (mode & S_IFMT) === S_IFDIR
export const isReg = (mode: number) => (mode & S_IFMT) === S_IFREG
export const isLnk = (mode: number) => (mode & S_IFMT) === S_IFLNK
