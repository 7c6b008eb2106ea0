/**
 * What every workload of `s0fs bench` runs against: a Target is a directory
 * plus a way to make its caches cold. The s0fs target is a real mount (the
 * `s0fs mount` daemon, a fresh volume per workload); the local target is a
 * plain directory on the disk that holds the benchmark's work directory; the
 * rclone target (`--compare rclone`) is an rclone mount of a directory on
 * that same disk.
 *
 * The benchmark process never serves a mount itself (the daemon does), so it
 * may use blocking calls and child processes on the mountpoint freely.
 */
import { execFileSync, spawn, spawnSync } from 'node:child_process'
import { closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { createServer, type AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { controlRequest } from '../src/mount/control.js'
import { canonicalMountpoint, recordPaths } from '../src/mount/registry.js'

export const BIN = fileURLToPath(new URL('../../bin/s0fs.js', import.meta.url))

export interface BenchContext {
  /** Scratch space for this run (local-disk targets, sources, portals). */
  work: string
  repo: string
  env: NodeJS.ProcessEnv
  runDir: string
  /** Smaller sizes and shorter runs (a smoke test of the harness, not a measurement). */
  quick: boolean
  /** Whether `echo 3 > /proc/sys/vm/drop_caches` works here (needs root). */
  canDropCaches: boolean
  /** Added to every `s0fs mount` of the run (`--mount-options`). */
  mountOptions: string[]
}

/** Request counts and bytes the daemon's object store saw. */
export interface RequestCounts {
  put: number
  get: number
  list: number
  delete: number
  head: number
  bytes_up: number
  bytes_down: number
}

/** The file systems a workload can run on: s0fs, the local disk, and the tools s0fs is compared with (`--compare`). */
export type TargetName = 's0fs' | 'local' | 'rclone'

/** What a target tells when its workload ends, beyond the workload's own figures. */
export interface FinishInfo {
  /** Object-store requests (s0fs). */
  requests?: RequestCounts
  /** Peak RSS of the mount's daemon (s0fs, rclone): the kernel's high-water mark, VmHWM. */
  daemon_peak_rss_mib?: number
  /** The s0fs daemon's RSS after the workload, once it has been idle for IDLE_SETTLE_MS (it returns freed memory when idle). */
  daemon_idle_rss_mib?: number
  /** Seconds the harness waited for the mount's asynchronous uploads to reach the backing store before cold steps and at the end (rclone). */
  writeback_wait_seconds?: number
}

export interface ColdOptions {
  portal?: boolean
  writebackCache?: boolean
}

export interface Target {
  readonly name: TargetName
  readonly dir: string
  /**
   * Makes the next access cold: remount (s0fs, rclone) and drop the kernel's page cache; with `portal`, also empty the
   * node-local cache (s0fs's portal, rclone's VFS cache); with `writebackCache`, remount with the kernel's writeback cache
   * (s0fs --writeback-cache, rclone --write-back-cache) until the next remount.
   */
  cold(options?: ColdOptions): Promise<void>
  /** Ends the workload; the s0fs target reports requests and the daemon's peak RSS, rclone its peak RSS and upload waits. */
  finish(): Promise<FinishInfo>
}

export function prepareContext(options: { repo?: string; quick: boolean; mountOptions?: string[] }): BenchContext {
  const work = mkdtempSync(path.join(process.env.S0FS_BENCH_DIR ?? tmpdir(), 's0fs-bench-'))
  const runDir = path.join(work, 'run')
  mkdirSync(runDir, { recursive: true })
  // A private runtime directory: the benchmark's mounts never mix with the user's.
  const env: NodeJS.ProcessEnv = { ...process.env, XDG_RUNTIME_DIR: runDir }
  let repo = options.repo
  if (!repo) {
    repo = `file://${path.join(work, 'repo')}`
    env.S0FS_KEY_FILE = path.join(work, 'key')
    delete env.S0FS_PASSPHRASE
    s0fs(env, ['init', '--repo', repo])
  }
  return { work, repo, env, runDir: path.join(runDir, 's0fs'), quick: options.quick, canDropCaches: tryDropCaches(), mountOptions: options.mountOptions ?? [] }
}

export function s0fs(env: NodeJS.ProcessEnv, args: string[]): string {
  return timed(process.execPath, [BIN, ...args], { env }).stdout
}

/** Flushes dirty pages and drops the page, dentry and inode caches; false when not permitted. */
export function tryDropCaches(): boolean {
  try {
    execFileSync('sync')
    writeFileSync('/proc/sys/vm/drop_caches', '3')
    return true
  } catch {
    return false
  }
}

let volumeSeq = 0
/** How long the harness leaves a daemon idle before reading its idle RSS (it trims its heap after 2 s idle). */
const IDLE_SETTLE_MS = 3500

/** A fresh volume of the benchmark repository, mounted by the real daemon. */
export class S0fsTarget implements Target {
  readonly name = 's0fs'
  readonly dir: string
  private readonly volume: string
  private readonly portal: string
  private readonly totals: RequestCounts = { put: 0, get: 0, list: 0, delete: 0, head: 0, bytes_up: 0, bytes_down: 0 }
  private peakRss = 0

  private constructor(
    private readonly ctx: BenchContext,
    workload: string,
  ) {
    this.volume = `bench-${workload}-${process.pid}-${++volumeSeq}`
    this.dir = path.join(ctx.work, `mnt-${workload}`)
    this.portal = path.join(ctx.work, `portal-${workload}`)
  }

  static async mount(ctx: BenchContext, workload: string): Promise<S0fsTarget> {
    const target = new S0fsTarget(ctx, workload)
    mkdirSync(target.dir, { recursive: true })
    target.mountNow(['--create'])
    return target
  }

  async cold(options: ColdOptions = {}): Promise<void> {
    await this.unmount()
    // After a clean unmount everything is in the bucket: the portal is only a cache now.
    if (options.portal) rmSync(this.portal, { recursive: true, force: true })
    if (this.ctx.canDropCaches) tryDropCaches()
    this.mountNow(options.writebackCache ? ['--writeback-cache'] : [])
  }

  async finish(): Promise<FinishInfo> {
    await controlRequest(this.socket, { op: 'commit' })
    await sleep(IDLE_SETTLE_MS)
    const idleRss = Number((await this.status()).rssBytes ?? 0)
    await this.unmount()
    rmSync(this.portal, { recursive: true, force: true })
    return { requests: { ...this.totals }, daemon_peak_rss_mib: Math.round(this.peakRss / 1024 / 1024), daemon_idle_rss_mib: Math.round(idleRss / 1024 / 1024) }
  }

  /** The daemon's status answer (see MountDaemon.status). */
  async status(): Promise<Record<string, unknown>> {
    return controlRequest(this.socket, { op: 'status' })
  }

  private get socket(): string {
    return recordPaths(this.ctx.runDir, canonicalMountpoint(this.dir)).socket
  }

  private mountNow(extra: string[]): void {
    s0fs(this.ctx.env, ['mount', '--repo', this.ctx.repo, this.volume, this.dir, '--cache-dir', this.portal, ...this.ctx.mountOptions, ...extra])
  }

  /** Commits, records the daemon's counters and peak RSS, and unmounts (the final commit's requests are counted too). */
  private async unmount(): Promise<void> {
    await controlRequest(this.socket, { op: 'commit' })
    const status = await this.status()
    const store = status.store as Record<string, number>
    this.totals.put += store.put
    this.totals.get += store.get
    this.totals.list += store.list
    this.totals.delete += store.delete
    this.totals.head += store.head
    this.totals.bytes_up += store.bytesOut
    this.totals.bytes_down += store.bytesIn
    this.peakRss = Math.max(this.peakRss, Number(status.peakRssBytes ?? 0))
    s0fs(this.ctx.env, ['umount', this.dir])
  }
}

/** A plain directory on local disk, for the same workload in the same run. */
export class LocalTarget implements Target {
  readonly name = 'local'
  readonly dir: string

  constructor(
    private readonly ctx: BenchContext,
    workload: string,
  ) {
    this.dir = path.join(ctx.work, `local-${workload}`)
    mkdirSync(this.dir, { recursive: true })
  }

  async cold(): Promise<void> {
    if (this.ctx.canDropCaches) tryDropCaches()
  }

  async finish(): Promise<Record<string, never>> {
    rmSync(this.dir, { recursive: true, force: true })
    return {}
  }
}

/**
 * rclone mount of a plain local directory, the comparison of `--compare rclone`:
 * `rclone mount <backing dir> <mountpoint> --vfs-cache-mode full --cache-dir <dir>`,
 * the backing directory on the same disk as s0fs's file:// repository (the
 * closest analogue of it: rclone stores each file as one object there).
 *
 * rclone's defaults are kept: with a full VFS cache a write lands in the cache
 * on local disk, and the file is uploaded to the backing store in the
 * background `--vfs-write-back` (5 s) after its last close; fsync makes it
 * durable in the cache only. Before each cold step and at the end the harness
 * waits (untimed) until rclone reports no upload queued or in progress, and
 * counts that wait; an unmount before then would leave dirty files in the
 * cache (rclone uploads them at its next start), and emptying the cache for a
 * read "from the backing store" would lose them.
 */
export class RcloneTarget implements Target {
  readonly name = 'rclone'
  readonly dir: string
  private readonly backing: string
  private readonly cache: string
  private readonly config: string
  private readonly log: string
  private child?: { pid: number; exited: Promise<void>; rcPort: number }
  private peakRssKib = 0
  private waitSeconds = 0

  private constructor(
    private readonly ctx: BenchContext,
    workload: string,
  ) {
    this.dir = path.join(ctx.work, `rclone-mnt-${workload}`)
    this.backing = path.join(ctx.work, `rclone-backing-${workload}`)
    this.cache = path.join(ctx.work, `rclone-cache-${workload}`)
    this.config = path.join(ctx.work, 'rclone.conf')
    this.log = path.join(ctx.work, `rclone-${workload}.log`)
  }

  /** rclone's version line, or undefined when rclone is not installed. */
  static version(): string | undefined {
    const r = spawnSync('rclone', ['version'], { encoding: 'utf8', timeout: 30_000 })
    if (r.status !== 0) return undefined
    return r.stdout.split('\n')[0].trim()
  }

  /** The mount command, as the report states it. */
  static readonly COMMAND = 'rclone mount <local dir> <mountpoint> --vfs-cache-mode full --cache-dir <dir>'

  static async mount(ctx: BenchContext, workload: string): Promise<RcloneTarget> {
    const target = new RcloneTarget(ctx, workload)
    for (const d of [target.dir, target.backing, target.cache]) mkdirSync(d, { recursive: true })
    // An empty config: no remote is named (the backing store is a path), and the user's config stays out of it.
    writeFileSync(target.config, '')
    await target.mountNow()
    return target
  }

  async cold(options: ColdOptions = {}): Promise<void> {
    await this.unmount()
    if (options.portal) {
      // Only clean files may be dropped from the cache: a dirty one exists nowhere else.
      const dirty = this.dirtyInCache()
      if (dirty.length) throw new Error(`rclone left ${dirty.length} file(s) not uploaded after its queue was empty, e.g. ${dirty[0]}`)
      rmSync(this.cache, { recursive: true, force: true })
      mkdirSync(this.cache, { recursive: true })
    }
    if (this.ctx.canDropCaches) tryDropCaches()
    await this.mountNow(options.writebackCache ? ['--write-back-cache'] : [])
  }

  async finish(): Promise<FinishInfo> {
    await this.unmount()
    for (const d of [this.dir, this.backing, this.cache]) rmSync(d, { recursive: true, force: true })
    return { daemon_peak_rss_mib: Math.round(this.peakRssKib / 1024), writeback_wait_seconds: Math.round(this.waitSeconds * 100) / 100 }
  }

  private async mountNow(extra: string[] = []): Promise<void> {
    const rcPort = await freePort()
    const logFd = openSync(this.log, 'a')
    const args = ['mount', this.backing, this.dir, '--config', this.config, '--vfs-cache-mode', 'full', '--cache-dir', this.cache, ...extra]
    // The remote control answers vfs/stats (uploads queued and in progress) on loopback.
    args.push('--rc', '--rc-addr', `127.0.0.1:${rcPort}`)
    const child = spawn('rclone', args, { detached: true, stdio: ['ignore', logFd, logFd] })
    closeSync(logFd)
    let exitCode: number | string | null | undefined
    const exited = new Promise<void>((resolve) => {
      child.once('exit', (code, signal) => {
        exitCode = code ?? signal
        resolve()
      })
      child.once('error', (err) => {
        exitCode = err.message
        resolve()
      })
    })
    child.unref()
    const deadline = Date.now() + 30_000
    while (!isMounted(this.dir)) {
      if (exitCode !== undefined || Date.now() > deadline) {
        if (exitCode === undefined && child.pid) process.kill(child.pid, 'SIGTERM')
        throw new Error(`rclone mount of ${this.dir} ${exitCode === undefined ? 'did not appear within 30 s' : `exited (${exitCode})`}: ${tail(this.log)}`)
      }
      await sleep(50)
    }
    this.child = { pid: child.pid!, exited, rcPort }
  }

  /** Waits for rclone's uploads, records its peak RSS, unmounts and waits for the process to end. */
  private async unmount(): Promise<void> {
    const child = this.child
    if (!child) return
    this.child = undefined
    const t0 = performance.now()
    await this.drain(child.rcPort)
    this.waitSeconds += (performance.now() - t0) / 1000
    this.peakRssKib = Math.max(this.peakRssKib, vmHwmKib(child.pid))
    const r = spawnSync('fusermount', ['-u', this.dir], { encoding: 'utf8' })
    if (r.status !== 0) spawnSync('umount', ['-l', this.dir])
    let timer: NodeJS.Timeout | undefined
    const ended = await Promise.race([child.exited.then(() => true), new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), 30_000)))])
    clearTimeout(timer)
    if (!ended) {
      process.kill(child.pid, 'SIGKILL')
      await child.exited
    }
  }

  /** Until rclone reports nothing queued or uploading three polls in a row (a file's release reaches rclone just after close returns). */
  private async drain(rcPort: number): Promise<void> {
    const deadline = Date.now() + 600_000
    let quiet = 0
    for (;;) {
      const stats = await rcCall(rcPort, 'vfs/stats')
      const disk = stats?.diskCache as { uploadsInProgress?: number; uploadsQueued?: number; erroredFiles?: number } | undefined
      if (disk?.erroredFiles) throw new Error(`rclone failed to upload ${disk.erroredFiles} file(s): ${tail(this.log)}`)
      if (disk && disk.uploadsInProgress === 0 && disk.uploadsQueued === 0) {
        if (++quiet >= 3) return
      } else {
        quiet = 0
      }
      if (Date.now() > deadline) throw new Error(`rclone's uploads did not finish within 600 s: ${JSON.stringify(disk)}`)
      await sleep(100)
    }
  }

  /** Files whose cache metadata says they are not uploaded yet. */
  private dirtyInCache(): string[] {
    const meta = path.join(this.cache, 'vfsMeta')
    if (!existsSync(meta)) return []
    const dirty: string[] = []
    const walk = (dir: string): void => {
      for (const e of readdirSync(dir, { withFileTypes: true })) {
        const full = path.join(dir, e.name)
        if (e.isDirectory()) walk(full)
        else if (e.isFile() && /"Dirty":\s*true/.test(readFileSync(full, 'utf8'))) dirty.push(path.relative(meta, full))
      }
    }
    walk(meta)
    return dirty
  }
}

async function rcCall(port: number, command: string): Promise<Record<string, unknown> | undefined> {
  try {
    const res = await fetch(`http://127.0.0.1:${port}/${command}`, { method: 'POST', signal: AbortSignal.timeout(10_000) })
    return res.ok ? ((await res.json()) as Record<string, unknown>) : undefined
  } catch {
    return undefined // not listening yet
  }
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer()
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => {
      const port = (server.address() as AddressInfo).port
      server.close(() => resolve(port))
    })
  })
}

/** Whether `dir` is a mountpoint now (/proc/self/mountinfo's fifth field, octal escapes decoded). */
function isMounted(dir: string): boolean {
  return readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .some((line) => line.split(' ')[4]?.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8))) === dir)
}

function vmHwmKib(pid: number): number {
  try {
    const m = /^VmHWM:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
    return m ? Number(m[1]) : 0
  } catch {
    return 0
  }
}

function tail(file: string): string {
  try {
    return readFileSync(file, 'utf8').trim().slice(-1500) || '(no output)'
  } catch {
    return '(no log)'
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms))
}

/** Runs a command, returns its wall time in seconds and its output; a failure throws with the command's stderr. */
export function timed(file: string, args: string[], options: { cwd?: string; env?: NodeJS.ProcessEnv } = {}): { seconds: number; stdout: string } {
  const t0 = performance.now()
  const r = spawnSync(file, args, { cwd: options.cwd, env: options.env ?? process.env, encoding: 'utf8', maxBuffer: 64 * 1024 * 1024, timeout: 900_000 })
  const seconds = (performance.now() - t0) / 1000
  if ((r.error as NodeJS.ErrnoException | undefined)?.code === 'ENOENT') throw new Error(`${file} is not installed (the benchmark runs it; on Debian: apt-get install ${file})`)
  if (r.error) throw new Error(`${file} could not run: ${r.error.message}`)
  if (r.status !== 0) throw new Error(`${file} ${args.join(' ')} failed (exit ${r.status ?? r.signal}): ${(r.stderr || r.stdout).trim().slice(-2000)}`)
  return { seconds, stdout: r.stdout }
}

/** Runs a Python snippet (the small-file loops: one syscall per step, no shell in between). */
export function python(script: string, args: string[]): { seconds: number; stdout: string } {
  return timed('python3', ['-c', script, ...args])
}

/** Deletes the run's scratch space — after making sure no mount is left inside it (rm would walk into it). */
export function removeWork(ctx: BenchContext): void {
  if (!existsSync(ctx.work)) return
  const mounts = readFileSync('/proc/mounts', 'utf8')
    .split('\n')
    .map((line) => line.split(' ')[1])
    .filter((m) => m && m.startsWith(ctx.work + '/'))
  for (const m of mounts) spawnSync('umount', ['-l', m])
  rmSync(ctx.work, { recursive: true, force: true })
}
