import { spawn } from 'node:child_process'
import fs from 'node:fs'
import { availableParallelism } from 'node:os'
import { nativeAddon } from '../util/native.js'
import { IN_HEADER, OUT_HEADER, readHeader, type Header } from './kernel.js'

/**
 * The FUSE device: opens /dev/fuse, mounts it, reads requests and writes
 * replies — the kernel protocol spoken directly, as Mountpoint for S3 (fuser)
 * and JuiceFS (go-fuse) do, instead of through libfuse.
 *
 * /dev/fuse is pollable. With the native addon, the event loop watches it
 * (uv_poll) and the addon reads every ready request on the main thread,
 * non-blocking: no thread hop per request. Without the addon, blocking reads
 * run on the libuv thread pool, several at once. Replies are written
 * synchronously, which never blocks on /dev/fuse.
 */

export interface MountOptions {
  mountpoint: string
  /** Shown as the mount's source in /proc/mounts, e.g. "s0fs:volume". */
  source: string
  readOnly?: boolean
  allowOther?: boolean
  /** Concurrent reads on /dev/fuse (each holds a thread-pool thread). */
  readers?: number
  /** Largest request: max_write (1 MiB) plus headers. */
  bufferSize?: number
  /**
   * After answering a request, keep reading /dev/fuse for this many
   * microseconds before sleeping (default DEFAULT_BUSY_POLL_US; 0: off).
   * Needs the native addon.
   */
  busyPollUs?: number
}

export class MountError extends Error {
  constructor(message: string) {
    super(message)
    this.name = 'MountError'
  }
}

export class MountInUseError extends Error {
  constructor(readonly mountpoint: string) {
    super(`${mountpoint} is busy: files are open or processes stand in it (see fuser -vm ${mountpoint}); close them, or unmount with --lazy`)
    this.name = 'MountInUseError'
  }
}

export type RequestHandler = (header: Header, body: Buffer) => void

const DEFAULT_BUFFER = 1024 * 1024 + 8192

/**
 * Busy polling after each request: a program creating, stat-ing or writing
 * files one after another sends its next request a few microseconds after
 * the last reply, and reading it at once instead of sleeping until the kernel
 * wakes this thread took creates from 3,300 to 4,200–4,700 files/s and the
 * getxattr round trip from 41–50 to 31–33 µs on this 2-vCPU VM (a wake-up
 * there is an interprocessor interrupt through the hypervisor). The cost is
 * up to 50 µs of one CPU per request. Off on one CPU, where the spinning
 * thread would hold the CPU the client needs to make its next request.
 */
const DEFAULT_BUSY_POLL_US = availableParallelism() >= 2 ? 50 : 0

export class FuseDevice {
  private stopped = false
  private resolveClosed!: () => void
  /** Resolves when the kernel ends the session (unmount). */
  readonly closed = new Promise<void>((resolve) => (this.resolveClosed = resolve))
  replies = 0
  /** The busy-polling window in effect (0 without the native addon). */
  busyPollUs = 0
  private polledCount: () => number = () => 0

  private constructor(
    readonly fd: number,
    readonly options: MountOptions,
  ) {}

  /** Opens /dev/fuse and mounts it at the mountpoint (needs root or CAP_SYS_ADMIN). */
  static async mount(options: MountOptions): Promise<FuseDevice> {
    let fd: number
    try {
      fd = fs.openSync('/dev/fuse', fs.constants.O_RDWR | (nativeAddon() ? fs.constants.O_NONBLOCK : 0))
    } catch (err) {
      throw new MountError(`cannot open /dev/fuse: ${(err as Error).message} (is the fuse module loaded, and /dev/fuse passed into this container?)`)
    }
    const uid = process.getuid?.() ?? 0
    const gid = process.getgid?.() ?? 0
    if (uid !== 0) {
      fs.closeSync(fd)
      throw new MountError('mounting needs root (or CAP_SYS_ADMIN): run s0fs mount as root, as sandbox platforms do')
    }
    // noatime says what is true: reads and listings do not update access times here (FUSE leaves atime to
    // the daemon, and a metadata write per read would cost every cold read a log record).
    const opts = [`fd=3`, 'rootmode=40000', `user_id=${uid}`, `group_id=${gid}`, 'default_permissions', 'nodev', 'nosuid', 'noatime']
    if (options.allowOther) opts.push('allow_other')
    if (options.readOnly) opts.push('ro')
    const result = await run('mount', ['-i', '-t', 'fuse.s0fs', '-o', opts.join(','), options.source, options.mountpoint], fd)
    if (result.code !== 0) {
      fs.closeSync(fd)
      throw new MountError(`mount of ${options.mountpoint} failed: ${result.stderr.trim() || `exit ${result.code}`}`)
    }
    return new FuseDevice(fd, options)
  }

  /** Starts serving: every request is parsed and handed to `handler` (which must copy what it keeps). */
  start(handler: RequestHandler): void {
    const native = nativeAddon()
    if (native) return this.pollLoop(handler, native)
    const readers = this.options.readers ?? 4
    for (let i = 0; i < readers; i++) this.readLoop(handler, Buffer.allocUnsafe(this.options.bufferSize ?? DEFAULT_BUFFER))
  }

  private pollLoop(handler: RequestHandler, native: NonNullable<ReturnType<typeof nativeAddon>>): void {
    const buf = Buffer.allocUnsafe(this.options.bufferSize ?? DEFAULT_BUFFER)
    // The addon reads every ready request itself and calls back once per request.
    const busyPollUs = (this.busyPollUs = this.options.busyPollUs ?? DEFAULT_BUSY_POLL_US)
    const watcher = native.watch(this.fd, buf, (n) => {
      if (n < 0) {
        native.unwatch(watcher)
        this.finish()
        return
      }
      if (n >= IN_HEADER && !this.stopped) this.dispatch(handler, buf, n)
    }, busyPollUs)
    this.polledCount = () => native.polled(watcher)
  }

  /** Requests that arrived while this device was busy polling (see MountOptions.busyPollUs). */
  get busyPolled(): number {
    return this.polledCount()
  }

  private dispatch(handler: RequestHandler, buf: Buffer, n: number): void {
    const header = readHeader(buf)
    try {
      handler(header, buf.subarray(IN_HEADER, Math.min(n, header.len)))
    } catch (e) {
      // A handler bug must not take the mount down: answer EIO and keep serving.
      this.reply(header.unique, -5)
      process.emitWarning(`s0fs: FUSE handler threw: ${(e as Error).stack ?? e}`)
    }
  }

  private readLoop(handler: RequestHandler, buf: Buffer): void {
    const next = (): void => {
      if (this.stopped) return
      fs.read(this.fd, buf, 0, buf.length, null, (err, n) => {
        if (err) {
          const code = (err as NodeJS.ErrnoException).code
          // ENOENT: the request was interrupted before we read it. EINTR/EAGAIN: try again.
          if (code === 'ENOENT' || code === 'EINTR' || code === 'EAGAIN') return next()
          this.finish()
          return
        }
        if (n >= IN_HEADER) this.dispatch(handler, buf, n)
        next()
      })
    }
    next()
  }

  /** Sends a reply: `error` is 0 or a negative errno; payload parts are concatenated. */
  reply(unique: bigint, error: number, ...payload: Buffer[]): void {
    if (this.stopped) return
    this.write([outHeader(unique, error, payload), ...payload])
  }

  /**
   * Sends an unsolicited notification (cache invalidation). Written from the
   * thread pool, never from this thread: the kernel may hold the notification
   * until a directory lock is free, and the holder may be a request waiting
   * for this very thread to answer it.
   */
  notify(code: number, ...payload: Buffer[]): void {
    if (this.stopped) return
    const message = Buffer.concat([outHeader(0n, code, payload), ...payload])
    // ENOENT: the kernel no longer knows that inode or name — nothing to forget.
    fs.write(this.fd, message, () => undefined)
  }

  private write(parts: Buffer[]): void {
    try {
      if (parts.length === 1) fs.writeSync(this.fd, parts[0])
      else fs.writevSync(this.fd, parts)
      this.replies++
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code
      // ENOENT: the request was interrupted and the kernel no longer waits for it.
      if (code === 'ENOENT') return
      if (code === 'ENODEV') return this.finish()
      throw err
    }
  }

  /**
   * Unmounts; the kernel then ends the session. A busy mount (open files,
   * working directories) is detached lazily, or with `lazy` false refused
   * with MountInUseError and left as it is.
   */
  async unmount(lazy = true): Promise<void> {
    if (this.stopped) return
    const r = await run('umount', [this.options.mountpoint])
    if (r.code === 0) return
    if (!lazy && /busy/i.test(r.stderr)) throw new MountInUseError(this.options.mountpoint)
    await run('umount', ['-l', this.options.mountpoint])
  }

  private finish(): void {
    if (this.stopped) return
    this.stopped = true
    try {
      fs.closeSync(this.fd)
    } catch {
      // already closed
    }
    this.resolveClosed()
  }
}

/** The header of a message to the kernel: total length, error (or notification code), unique. */
function outHeader(unique: bigint, error: number, payload: Buffer[]): Buffer {
  let length = OUT_HEADER
  for (const p of payload) length += p.length
  const header = Buffer.allocUnsafe(OUT_HEADER)
  header.writeUInt32LE(length, 0)
  header.writeInt32LE(error, 4)
  header.writeBigUInt64LE(unique, 8)
  return header
}

/** Runs a command; `fd` becomes the child's fd 3. */
export function run(cmd: string, args: string[], fd?: number): Promise<{ code: number; stderr: string }> {
  return new Promise((resolve) => {
    // LC_ALL=C: callers read the messages (umount's "target is busy"), which a translated locale would change.
    const child = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'pipe', ...(fd === undefined ? [] : [fd])], env: { ...process.env, LC_ALL: 'C' } })
    let stderr = ''
    child.stderr!.on('data', (d) => (stderr += d))
    child.on('error', (err) => resolve({ code: 127, stderr: err.message }))
    child.on('close', (code) => resolve({ code: code ?? 1, stderr }))
  })
}
