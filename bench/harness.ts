/**
 * What every workload of `s0fs bench` runs against: a Target is a directory
 * plus a way to make its caches cold. The s0fs target is a real mount (the
 * `s0fs mount` daemon, a fresh volume per workload); the local target is a
 * plain directory on the disk that holds the benchmark's work directory.
 *
 * The benchmark process never serves a mount itself (the daemon does), so it
 * may use blocking calls and child processes on the mountpoint freely.
 */
import { execFileSync, spawnSync } from 'node:child_process'
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
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

export interface Target {
  readonly name: 's0fs' | 'local'
  readonly dir: string
  /** Makes the next access cold: remount (s0fs) and drop the kernel's page cache; with `portal`, also empty the node-local cache. */
  cold(options?: { portal?: boolean }): Promise<void>
  /** Ends the workload; the s0fs target reports requests and the daemon's peak RSS. */
  finish(): Promise<{ requests?: RequestCounts; daemon_peak_rss_mib?: number }>
}

export function prepareContext(options: { repo?: string; quick: boolean }): BenchContext {
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
  return { work, repo, env, runDir: path.join(runDir, 's0fs'), quick: options.quick, canDropCaches: tryDropCaches() }
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

  async cold(options: { portal?: boolean } = {}): Promise<void> {
    await this.unmount()
    // After a clean unmount everything is in the bucket: the portal is only a cache now.
    if (options.portal) rmSync(this.portal, { recursive: true, force: true })
    if (this.ctx.canDropCaches) tryDropCaches()
    this.mountNow([])
  }

  async finish(): Promise<{ requests: RequestCounts; daemon_peak_rss_mib: number }> {
    await this.unmount()
    rmSync(this.portal, { recursive: true, force: true })
    return { requests: { ...this.totals }, daemon_peak_rss_mib: Math.round(this.peakRss / 1024 / 1024) }
  }

  /** The daemon's status answer (see MountDaemon.status). */
  async status(): Promise<Record<string, unknown>> {
    return controlRequest(this.socket, { op: 'status' })
  }

  private get socket(): string {
    return recordPaths(this.ctx.runDir, canonicalMountpoint(this.dir)).socket
  }

  private mountNow(extra: string[]): void {
    s0fs(this.ctx.env, ['mount', '--repo', this.ctx.repo, this.volume, this.dir, '--cache-dir', this.portal, ...extra])
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

/** Runs a command, returns its wall time in seconds and its output; a failure throws with the command's stderr. */
export function timed(file: string, args: string[], options: { cwd?: string; env?: NodeJS.ProcessEnv } = {}): { seconds: number; stdout: string } {
  const t0 = performance.now()
  const r = spawnSync(file, args, { cwd: options.cwd, env: options.env ?? process.env, encoding: 'utf8', maxBuffer: 64 * 1024 * 1024, timeout: 900_000 })
  const seconds = (performance.now() - t0) / 1000
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
