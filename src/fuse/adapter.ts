import { FsError, isDotName, type Cred, type FileSystem, type SetAttr } from '../fs/index.js'
import type { FuseDevice } from './device.js'
import {
  ATTR_OUT,
  cString,
  direntSize,
  ENTRY_OUT,
  FATTR,
  FOPEN_KEEP_CACHE,
  FUSE_KERNEL_MINOR_VERSION,
  FUSE_KERNEL_VERSION,
  FUSE_WRITE_KILL_SUIDGID,
  Init,
  NOTIFY,
  OPEN_OUT,
  Op,
  OP_NAMES,
  readS64,
  readU64,
  writeAttr,
  writeDirent,
  writeEntry,
  writeTtl,
  writeU64,
  type Header,
} from './kernel.js'

/**
 * Serves FUSE requests from a FileSystem. Thin by design: it decodes each
 * request, calls the matching inode-level operation, and encodes the reply;
 * path resolution, permissions and storage all live in the filesystem core.
 *
 * Choices that matter for speed, all safe because this process is the
 * volume's only writer:
 * - OPEN, OPENDIR, CREATE and FLUSH are answered ENOSYS once, after which the
 *   kernel stops sending them (no_open/no_create/no_flush): a cold read of a
 *   small file is LOOKUP + READ, a create is LOOKUP + MKNOD + WRITE. Files get
 *   FOPEN_KEEP_CACHE, so the page cache survives reopens.
 * - Long entry/attribute timeouts and negative-entry caching; out-of-band
 *   changes (made through the control socket) invalidate explicitly.
 * - default_permissions: the kernel checks access with the caller's full
 *   credentials; the core applies ownership and setgid rules.
 * - READDIRPLUS, parallel directory operations, 1 MiB writes (max_pages).
 */

export interface AdapterHooks {
  /** fsync/fdatasync: make everything written so far durable (local log, or the bucket). */
  fsync(): Promise<void>
  /** An operation failed for a reason other than a POSIX error (storage, corruption): log it. */
  onError?(op: string, err: unknown): void
  /** The kernel's INIT has been answered: the mount is live. */
  onInit?(): void
}

export interface AdapterOptions {
  /** Seconds the kernel may cache names, attributes and negative lookups. */
  entryTtl?: number
  attrTtl?: number
  negativeTtl?: number
  /**
   * FUSE_WRITEBACK_CACHE: the kernel buffers writes in its page cache and
   * sends them in large batches (on close, fsync, memory pressure or after
   * ~30 s), and owns files' sizes and times meanwhile. Off by default: data
   * written but not yet closed or fsynced sits in the kernel, which a daemon
   * crash loses, and changes made around the kernel (the control socket)
   * cannot update a size the kernel caches.
   */
  writebackCache?: boolean
  /**
   * false: extended attributes are switched off — the first xattr request of
   * each kind is answered ENOSYS, after which the kernel stops sending them
   * and tells programs EOPNOTSUPP. That spares the getxattr
   * ("security.capability") round trip the kernel makes before a new file's
   * first write and before every chown, whatever the file holds: one in
   * seven of `tar -x`'s requests. On by default: programs that keep
   * attributes (setcap, cp -a, rsync -X) need them.
   */
  xattrs?: boolean
}

export interface OpStats {
  count: number
  errors: number
  bytes: number
  /** Total time from request to reply, in milliseconds. */
  ms: number
}

const EIO = -5
const ENOSYS = -38
const SEEK_DATA = 3
const SEEK_HOLE = 4
const ERANGE = -34
const ENODATA = -61
const MAX_WRITE = 1024 * 1024
/**
 * Requests the kernel sends without a caller waiting on each (writeback
 * WRITEs, readahead READs) that may be in flight at once. Each such WRITE
 * holds its copy of up to 1 MiB here until it is logged, and a daemon busy
 * with a flush takes them in more slowly than the kernel hands them out: at
 * 64, fio's random writes with --writeback-cache had 32 MiB of them waiting.
 * At 16 that daemon peaked at 134-137 MiB against 147-151 at 64, with more
 * IOPS. What waits stays in the kernel as the dirty pages it holds anyway.
 */
const MAX_BACKGROUND = 16
/**
 * With the writeback cache nearly every background request is such a WRITE
 * of 1 MiB, and the page cache is the write buffer already: fio's random
 * writes there peaked at 131-134 MiB with 8 in flight against 147-150 with
 * 16, at the same IOPS, and cold sequential reads on such a mount (which
 * share the slots for their readahead) measured the same within noise
 * (portal 493-539 against 476-485 MB/s, bucket 301-362 against 331-369).
 * Without the writeback cache only readahead and direct I/O use the slots,
 * and 16 stays: 8 cost cold sequential reads there before.
 */
const MAX_BACKGROUND_WRITEBACK = 8
const XATTR_OPS = new Set<number>([Op.SETXATTR, Op.GETXATTR, Op.LISTXATTR, Op.REMOVEXATTR])

export class FuseAdapter {
  readonly stats = new Map<string, OpStats>()
  private minor = FUSE_KERNEL_MINOR_VERSION
  private readonly entryTtl: number
  private readonly attrTtl: number
  private readonly negativeTtl: number
  private initialized = false

  constructor(
    private readonly device: FuseDevice,
    private readonly fs: FileSystem,
    private readonly hooks: AdapterHooks,
    private readonly options: AdapterOptions = {},
  ) {
    this.entryTtl = options.entryTtl ?? 60
    this.attrTtl = options.attrTtl ?? 60
    this.negativeTtl = options.negativeTtl ?? 60
  }

  /** The request handler to give FuseDevice.start. */
  readonly handle = (h: Header, body: Buffer): void => {
    const op = h.opcode
    switch (op) {
      case Op.INIT:
        return this.init(h, body)
      case Op.FORGET:
        return void this.forget(h.nodeid, readU64(body, 0))
      case Op.BATCH_FORGET: {
        const count = body.readUInt32LE(0)
        for (let i = 0; i < count; i++) void this.forget(readU64(body, 8 + i * 16), readU64(body, 16 + i * 16))
        return
      }
      case Op.INTERRUPT:
        return // the operation finishes anyway; its reply is then ignored by the kernel
      case Op.OPEN:
      case Op.OPENDIR:
      case Op.CREATE:
      case Op.FLUSH:
      case Op.ACCESS:
        return this.device.reply(h.unique, ENOSYS)
      case Op.RELEASE:
      case Op.RELEASEDIR:
      case Op.DESTROY:
        return this.device.reply(h.unique, 0)
    }
    const cred: Cred = { uid: h.uid, gid: h.gid, groups: [], kernelChecked: true }
    const name = OP_NAMES[op] ?? `op${op}`
    let stats = this.stats.get(name)
    if (!stats) this.stats.set(name, (stats = { count: 0, errors: 0, bytes: 0, ms: 0 }))
    stats.count++
    const started = performance.now()
    const done = this.dispatch(op, h, body, cred, stats)
    if (done) {
      done.then(
        () => (stats!.ms += performance.now() - started),
        (err) => {
          stats!.errors++
          stats!.ms += performance.now() - started
          if (err instanceof FsError) return this.device.reply(h.unique, -err.errno)
          this.hooks.onError?.(name, err)
          this.device.reply(h.unique, EIO)
        },
      )
    }
  }

  private dispatch(op: number, h: Header, body: Buffer, cred: Cred, stats: OpStats): Promise<void> | undefined {
    const fs = this.fs
    const node = h.nodeid
    const u = h.unique
    // Switched off (AdapterOptions.xattrs): the kernel stops sending each kind after its first ENOSYS.
    if (this.options.xattrs === false && XATTR_OPS.has(op)) return Promise.resolve(this.device.reply(u, ENOSYS))
    switch (op) {
      case Op.LOOKUP: {
        const name = cString(body, 0).value
        // A miss is cached too: the kernel will not ask again until it creates the name itself.
        return fs.tryLookup(cred, node, name).then((inode) => this.replyEntry(u, inode))
      }
      case Op.GETATTR:
        return fs.getattr(node).then((inode) => this.replyAttr(u, inode))
      case Op.SETATTR:
        return this.setattr(u, node, body, cred)
      case Op.READLINK:
        return fs.readlink(node).then((target) => this.device.reply(u, 0, target))
      case Op.MKNOD: {
        const mode = body.readUInt32LE(0)
        const rdev = body.readUInt32LE(4)
        const name = cString(body, this.minor >= 12 ? 16 : 8).value
        return fs.mknod(cred, node, name, mode, rdev).then((inode) => this.replyEntry(u, inode))
      }
      case Op.TMPFILE:
        return this.tmpfile(u, node, body.readUInt32LE(4), cred)
      case Op.MKDIR: {
        const mode = body.readUInt32LE(0)
        const name = cString(body, 8).value
        return fs.mkdir(cred, node, name, mode).then((inode) => this.replyEntry(u, inode))
      }
      case Op.SYMLINK: {
        const name = cString(body, 0)
        const target = cString(body, name.end).value
        return fs.symlink(cred, node, name.value, target).then((inode) => this.replyEntry(u, inode))
      }
      case Op.LINK: {
        const old = readU64(body, 0)
        const name = cString(body, 8).value
        return fs.link(cred, old, node, name).then((inode) => this.replyEntry(u, inode))
      }
      case Op.UNLINK:
        return fs.unlink(cred, node, cString(body, 0).value).then(() => this.device.reply(u, 0))
      case Op.RMDIR:
        return fs.rmdir(cred, node, cString(body, 0).value).then(() => this.device.reply(u, 0))
      case Op.RENAME:
      case Op.RENAME2: {
        const newDir = readU64(body, 0)
        const flags = op === Op.RENAME2 ? body.readUInt32LE(8) : 0
        const oldName = cString(body, op === Op.RENAME2 ? 16 : 8)
        const newName = cString(body, oldName.end).value
        return fs.rename(cred, node, oldName.value, newDir, newName, flags).then(() => this.device.reply(u, 0))
      }
      case Op.READ: {
        const offset = readU64(body, 8)
        const size = body.readUInt32LE(16)
        return fs.readParts(node, offset, size).then((parts) => {
          for (const part of parts) stats.bytes += part.length
          this.device.reply(u, 0, ...parts)
        })
      }
      case Op.WRITE: {
        const offset = readU64(body, 8)
        const size = body.readUInt32LE(16)
        const killPriv = (body.readUInt32LE(20) & FUSE_WRITE_KILL_SUIDGID) !== 0
        const start = this.minor >= 9 ? 40 : 24
        // The request buffer is reused as soon as this returns: fs.write copies the bytes before it awaits.
        const data = body.subarray(start, start + size)
        stats.bytes += size
        return fs.write(cred, node, offset, data, { killPriv }).then((written) => {
          const out = Buffer.alloc(8)
          out.writeUInt32LE(written, 0)
          this.device.reply(u, 0, out)
        })
      }
      case Op.STATFS:
        return fs.statfs().then((st) => {
          const out = Buffer.alloc(80)
          writeU64(out, 0, st.blocks)
          writeU64(out, 8, st.blocksFree)
          writeU64(out, 16, st.blocksFree)
          writeU64(out, 24, st.files)
          writeU64(out, 32, st.filesFree)
          out.writeUInt32LE(st.blockSize, 40)
          out.writeUInt32LE(st.nameMax, 44)
          out.writeUInt32LE(st.blockSize, 48)
          this.device.reply(u, 0, out)
        })
      case Op.FSYNC:
      case Op.FSYNCDIR:
        return this.hooks.fsync().then(() => this.device.reply(u, 0))
      case Op.SETXATTR: {
        const size = body.readUInt32LE(0)
        const flags = body.readUInt32LE(4)
        const name = cString(body, 8)
        const value = Buffer.from(body.subarray(name.end, name.end + size))
        return fs.setxattr(cred, node, name.value, value, flags).then(() => this.device.reply(u, 0))
      }
      case Op.GETXATTR: {
        const size = body.readUInt32LE(0)
        const name = cString(body, 8).value
        return fs.tryGetxattr(cred, node, name).then((value) => (value ? this.replySized(u, size, value) : this.device.reply(u, ENODATA)))
      }
      case Op.LISTXATTR: {
        const size = body.readUInt32LE(0)
        return fs.listxattr(cred, node).then((names) => this.replySized(u, size, Buffer.concat(names.flatMap((n) => [n, Buffer.of(0)]))))
      }
      case Op.REMOVEXATTR:
        return fs.removexattr(cred, node, cString(body, 0).value).then(() => this.device.reply(u, 0))
      case Op.FALLOCATE: {
        const offset = readU64(body, 8)
        const length = readU64(body, 16)
        const mode = body.readUInt32LE(24)
        return fs.fallocate(cred, node, mode, offset, length).then(() => this.device.reply(u, 0))
      }
      case Op.LSEEK: {
        const whence = body.readUInt32LE(16)
        // The kernel sends only SEEK_DATA and SEEK_HOLE (it moves the offset itself for the others); ENOSYS here would switch LSEEK off for good.
        if (whence !== SEEK_DATA && whence !== SEEK_HOLE) return Promise.resolve(this.device.reply(u, -22))
        // With the writeback cache the latest writes may still be in the kernel, where this daemon cannot
        // see them: rather than call written data a hole, let the kernel treat every byte as data (ENOSYS).
        if (this.options.writebackCache) return Promise.resolve(this.device.reply(u, ENOSYS))
        return fs.seek(node, readU64(body, 8), whence === SEEK_DATA ? 'data' : 'hole').then((offset) => {
          const out = Buffer.alloc(8)
          writeU64(out, 0, offset)
          this.device.reply(u, 0, out)
        })
      }
      case Op.READDIR:
      case Op.READDIRPLUS:
        return this.readdir(u, node, readU64(body, 8), body.readUInt32LE(16), op === Op.READDIRPLUS, cred)
      default:
        this.device.reply(u, ENOSYS)
        return undefined
    }
  }

  private init(h: Header, body: Buffer): void {
    const major = body.readUInt32LE(0)
    const minor = body.readUInt32LE(4)
    const maxReadahead = body.readUInt32LE(8)
    const kernelFlags = body.readUInt32LE(12)
    if (major !== FUSE_KERNEL_VERSION) {
      // A newer major: answer with ours and the kernel retries, or gives up.
      const out = Buffer.alloc(8)
      out.writeUInt32LE(FUSE_KERNEL_VERSION, 0)
      out.writeUInt32LE(FUSE_KERNEL_MINOR_VERSION, 4)
      return this.device.reply(h.unique, 0, out)
    }
    this.minor = Math.min(minor, FUSE_KERNEL_MINOR_VERSION)
    const want =
      Init.ASYNC_READ |
      Init.BIG_WRITES |
      Init.DO_READDIRPLUS |
      Init.READDIRPLUS_AUTO |
      Init.ASYNC_DIO |
      Init.NO_OPEN_SUPPORT |
      Init.PARALLEL_DIROPS |
      Init.MAX_PAGES |
      Init.CACHE_SYMLINKS |
      Init.NO_OPENDIR_SUPPORT |
      // We clear setuid/setgid ourselves when told to, which spares the kernel a
      // getxattr("security.capability") round trip before every write.
      Init.HANDLE_KILLPRIV_V2 |
      (this.options.writebackCache ? Init.WRITEBACK_CACHE : 0)
    const out = Buffer.alloc(64)
    out.writeUInt32LE(FUSE_KERNEL_VERSION, 0)
    out.writeUInt32LE(this.minor, 4)
    out.writeUInt32LE(Math.min(maxReadahead, MAX_WRITE), 8)
    out.writeUInt32LE(kernelFlags & want, 12)
    const maxBackground = this.options.writebackCache ? MAX_BACKGROUND_WRITEBACK : MAX_BACKGROUND
    out.writeUInt16LE(maxBackground, 16)
    out.writeUInt16LE((maxBackground * 3) / 4, 18) // congestion_threshold: the kernel's own ratio
    out.writeUInt32LE(MAX_WRITE, 20) // max_write
    out.writeUInt32LE(1, 24) // time_gran: nanoseconds
    out.writeUInt16LE(MAX_WRITE / 4096, 28) // max_pages
    this.initialized = true
    this.device.reply(h.unique, 0, this.minor >= 23 ? out : out.subarray(0, 24))
    this.hooks.onInit?.()
  }

  get ready(): boolean {
    return this.initialized
  }

  private async forget(ino: number, count: number): Promise<void> {
    if (ino === 1) return
    try {
      await this.fs.unpin(ino, count)
    } catch (err) {
      this.hooks.onError?.('forget', err)
    }
  }

  /**
   * open(2) with O_TMPFILE: an unnamed file the caller may later linkat(2)
   * into place. The reply is an entry (the kernel's reference, dropped by
   * FORGET; the file is deleted then unless it was linked) and, since the
   * kernel opens it at once, fuse_open_out.
   */
  private async tmpfile(unique: bigint, dir: number, mode: number, cred: Cred): Promise<void> {
    const inode = await this.fs.tmpfile(cred, dir, mode)
    const out = Buffer.alloc(ENTRY_OUT + OPEN_OUT)
    this.fs.pin(inode.ino)
    writeEntry(out, 0, inode, this.entryTtl, this.attrTtl)
    out.writeUInt32LE(FOPEN_KEEP_CACHE, ENTRY_OUT + 8) // fh 0, as every file here (OPEN answers ENOSYS)
    this.device.reply(unique, 0, out)
    await this.fs.unpin(inode.ino) // tmpfile's own reference: the kernel's is the one that counts now
  }

  private replyEntry(unique: bigint, inode: Parameters<typeof writeEntry>[2] | undefined): void {
    const out = Buffer.allocUnsafe(ENTRY_OUT)
    if (inode) {
      // Every entry reply is one kernel reference, dropped later by FORGET.
      this.fs.pin(inode.ino)
      writeEntry(out, 0, inode, this.entryTtl, this.attrTtl)
    } else {
      writeEntry(out, 0, undefined, this.negativeTtl, 0)
    }
    this.device.reply(unique, 0, out)
  }

  private replyAttr(unique: bigint, inode: Parameters<typeof writeAttr>[2]): void {
    const out = Buffer.allocUnsafe(ATTR_OUT)
    writeTtl(out, 0, 8, this.attrTtl)
    out.writeUInt32LE(0, 12)
    writeAttr(out, 16, inode)
    this.device.reply(unique, 0, out)
  }

  /** getxattr/listxattr: size 0 asks for the length, a small buffer is ERANGE. */
  private replySized(unique: bigint, size: number, value: Buffer): void {
    if (size === 0) {
      const out = Buffer.alloc(8)
      out.writeUInt32LE(value.length, 0)
      return this.device.reply(unique, 0, out)
    }
    if (value.length > size) return this.device.reply(unique, ERANGE)
    this.device.reply(unique, 0, value)
  }

  private async setattr(unique: bigint, ino: number, body: Buffer, cred: Cred): Promise<void> {
    const valid = body.readUInt32LE(0)
    const set: SetAttr = {}
    if (valid & FATTR.MODE) set.mode = body.readUInt32LE(68)
    if (valid & FATTR.UID) set.uid = body.readUInt32LE(76)
    if (valid & FATTR.GID) set.gid = body.readUInt32LE(80)
    if (valid & FATTR.SIZE) set.size = readU64(body, 16)
    if (valid & FATTR.ATIME) set.atime = valid & FATTR.ATIME_NOW ? 'now' : { s: readS64(body, 32), ns: body.readUInt32LE(56) }
    if (valid & FATTR.MTIME) set.mtime = valid & FATTR.MTIME_NOW ? 'now' : { s: readS64(body, 40), ns: body.readUInt32LE(60) }
    if (valid & FATTR.CTIME) set.ctime = { s: readS64(body, 48), ns: body.readUInt32LE(64) }
    if (valid & FATTR.KILL_SUIDGID) set.killPriv = true
    const inode = await this.fs.setattr(cred, ino, set)
    this.replyAttr(unique, inode)
  }

  private async readdir(unique: bigint, ino: number, offset: number, size: number, plus: boolean, cred: Cred): Promise<void> {
    const out = Buffer.allocUnsafe(size)
    let used = 0
    let cookie = offset
    // Ask for a few more than fit on average; stop at the first that does not fit.
    for (;;) {
      const entries = await this.fs.readdir(cred, ino, cookie, plus ? 64 : 256)
      if (entries.length === 0) break
      for (const e of entries) {
        const need = plus ? ENTRY_OUT + direntSize(e.name.length) : direntSize(e.name.length)
        if (used + need > size) return this.device.reply(unique, 0, out.subarray(0, used))
        if (plus) {
          if (isDotName(e.name)) writeEntry(out, used, undefined, 0, 0)
          else {
            const inode = await this.fs.getattr(e.ino).catch(() => undefined)
            if (!inode) {
              cookie = e.next
              continue // removed meanwhile
            }
            this.fs.pin(inode.ino)
            writeEntry(out, used, inode, this.entryTtl, this.attrTtl)
          }
          used += ENTRY_OUT
        }
        used += writeDirent(out, used, e.ino, e.next, e.type, e.name)
        cookie = e.next
      }
    }
    this.device.reply(unique, 0, out.subarray(0, used))
  }

  /** Tells the kernel to forget a name (after a change it did not make itself). */
  invalidateEntry(parent: number, name: Buffer): void {
    const out = Buffer.alloc(16 + name.length + 1)
    writeU64(out, 0, parent)
    out.writeUInt32LE(name.length, 8)
    name.copy(out, 16)
    this.device.notify(NOTIFY.INVAL_ENTRY, out)
  }

  /** Tells the kernel an inode's attributes and cached data are stale. */
  invalidateInode(ino: number): void {
    const out = Buffer.alloc(24)
    writeU64(out, 0, ino)
    writeU64(out, 8, 0)
    writeU64(out, 16, 0) // length 0: the whole file
    this.device.notify(NOTIFY.INVAL_INODE, out)
  }
}
