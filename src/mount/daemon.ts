import { promises as fsp } from 'node:fs'
import type { Server } from 'node:net'
import { FsError } from '../fs/index.js'
import { FuseAdapter } from '../fuse/adapter.js'
import { FuseDevice, MountInUseError, run } from '../fuse/device.js'
import { InvalidNameError, LeaseLostError, RefExistsError, RefNotFoundError } from '../meta/index.js'
import { Portal } from '../portal/index.js'
import { VolumeFiles, type Repository, type VolumeSession } from '../repo/index.js'
import { sleep } from '../store/index.js'
import type { Logger } from '../util/log.js'
import { peakRssBytes } from '../util/process.js'
import { raiseServingPriority, startHeapTrimmer } from './runtime.js'
import { EXIT } from '../cli/exit-codes.js'
import { ControlError, serveControl, type ControlRequest, type ControlResult, type ControlSession } from './control.js'
import { serveFileOp } from './file-service.js'
import { serveMetrics } from './metrics.js'
import { PortalAdmission } from './admission.js'
import { canonicalMountpoint, mountState, recordPaths, removeRecord, s0fsDevice, writeRecord } from './registry.js'

export interface DaemonOptions {
  repo: Repository
  /** The repository as shown to people (no secrets). */
  repoDisplay: string
  volume: string
  mountpoint: string
  readOnly?: boolean
  snapshot?: string
  /** What fsync waits for: the local log, or a commit to the bucket. */
  sync: 'local' | 'remote'
  /** With sync 'remote': how long fsync waits for the bucket before it answers EIO (default 60 s). */
  syncTimeoutMs?: number
  cacheDir: string
  cacheBytes: number
  allowOther?: boolean
  /** Let the kernel buffer writes (FUSE_WRITEBACK_CACHE; see AdapterOptions.writebackCache). */
  writebackCache?: boolean
  /** false: extended attributes off (see AdapterOptions.xattrs). */
  xattrs?: boolean
  /** Microseconds to keep reading /dev/fuse after each request (see MountOptions.busyPollUs). */
  busyPollUs?: number
  /** Create the volume if it does not exist. */
  create?: boolean
  commitIntervalMs?: number
  /** The write lease's time to live (default 90 s): the longest store outage the mount rides out. */
  leaseTtlMs?: number
  /** Serve Prometheus metrics at http://HOST:PORT/metrics. */
  metrics?: { host: string; port: number }
  runDir: string
  log: Logger
}

/** fsync --sync=remote retries a failing commit this long before it answers EIO. */
const REMOTE_SYNC_DEADLINE_MS = 60_000
/**
 * A writer that cannot renew its lease stops writing before the lease could
 * expire anywhere (at 80% of the TTL after the last renewal, renewals every
 * third). 90 s keeps a mount writing through a 30 s store outage whenever it
 * starts; a crashed mount on another host then blocks takeover that long
 * (on the same host a dead holder is taken over at once).
 */
const DEFAULT_MOUNT_LEASE_TTL_MS = 90_000
const TICK_MS = 1_000
const IDLE_MS = 1_000
/**
 * A commit starts early once the log holds this much. Commits store what is
 * pending without holding writers back, so there is no separate background
 * flush: under steady random writes it stored the same hot bytes again and
 * again, and starting one at 64 MiB pending cost fio's random writes a
 * third of their rate (6,800 vs 4,400 IOPS, alternating runs) for nothing a
 * commit five seconds later would not do.
 */
const COMMIT_PRESSURE_BYTES = 256 * 1024 * 1024
/**
 * Readahead of the mount. A FUSE mount starts at 128 KiB (and INIT can only
 * lower it), so sequential reads arrive as 128 KiB requests, each a round
 * trip; one full-size request (1 MiB) took cold sequential reads from the
 * portal from 281–289 to 359–418 MB/s (dd of 512 MiB, this machine).
 */
const READAHEAD_KB = 1024
/**
 * With --writeback-cache, how much written data the kernel may hold for this
 * mount before writers wait for writeback. The kernel starts a FUSE mount at
 * 1% of its dirty limit (~47 MiB here), which kept fio's 4 KiB random writes
 * to a 128 MiB file at 9–10k IOPS: the kernel wrote scattered pages back as
 * small WRITEs about as fast as they came. 256 MiB (at most a quarter of the
 * portal cap) lets rewrites of the same pages meet in the page cache first
 * (158k IOPS in the benchmark); it is also the most an opted-in daemon crash
 * can lose.
 */
const WRITEBACK_DIRTY_BYTES = 256 * 1024 * 1024

/**
 * One mounted volume: the FUSE session, the writer session (lease, log,
 * commits), the portal, the background flusher and committer, and the
 * control socket. Runs until unmounted, SIGTERM/SIGINT, or `s0fs umount`,
 * and then always ends the same way: unmount, final commit, lease released.
 */
export class MountDaemon {
  private session!: VolumeSession
  private device!: FuseDevice
  private adapter!: FuseAdapter
  private files!: VolumeFiles
  private portal!: Portal
  private control?: Server
  private metrics?: { server: Server; url: string }
  private timer?: NodeJS.Timeout
  private stopTrimmer?: () => void
  private stopping?: Promise<void>
  /** A signal that arrived while start() was still running: acted on once it is done. */
  private stopAsked?: string
  private running = false
  private resolveDone!: () => void
  /** Resolves once the daemon has stopped (unmounted, committed, released). */
  readonly done = new Promise<void>((resolve) => (this.resolveDone = resolve))
  private lastWrite = 0
  private lastRequest = 0
  private finalCommitError?: string
  private lastCommit = Date.now()
  private lastCommitError?: string
  private commitFailures = 0
  private committing?: Promise<unknown>
  private admission!: PortalAdmission
  readonly started = new Date()

  constructor(readonly options: DaemonOptions) {}

  /** The mountpoint, resolved once before mounting (never touch it afterwards: see recordPaths). */
  private canonical!: string

  get mountpoint(): string {
    return this.options.mountpoint
  }

  async start(): Promise<void> {
    const o = this.options
    const log = o.log
    // Listening from the first moment: a supervisor may send SIGTERM as soon as the mount appears, and
    // before start() is done, and the default action would kill the daemon and leave a dead mount behind.
    for (const signal of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) {
      process.on(signal, () => {
        if (this.running) void this.stop(signal)
        else this.stopAsked ??= signal
      })
    }
    await fsp.mkdir(o.mountpoint, { recursive: true }).catch(() => undefined)
    this.canonical = canonicalMountpoint(o.mountpoint)
    const state = await mountState(this.canonical)
    if (state === 'dead') {
      log.warn('mountpoint has a dead s0fs mount (its daemon is gone); cleaning it up', { mountpoint: o.mountpoint })
      await run('umount', ['-l', o.mountpoint])
    } else if (state === 'mounted' || state === 'other') {
      throw new MountBusyError(`${o.mountpoint} is already a mount point${state === 'mounted' ? ' of s0fs' : ''}; unmount it first`)
    }

    this.portal = new Portal(o.cacheDir, o.repo.store, { capBytes: o.cacheBytes })
    await this.portal.init()
    o.repo.useSegmentSource(this.portal.cache)

    if (!o.snapshot && !(await o.repo.refs.getVolume(o.volume))) {
      if (!o.create) throw new RefNotFoundError('volume', o.volume, 'use --create to create it')
      await o.repo.createVolume(o.volume, { uid: process.getuid?.() ?? 0, gid: process.getgid?.() ?? 0 })
      log.info('created volume', { volume: o.volume })
    }
    this.session = await o.repo.openVolume(o.volume, {
      portalDir: o.cacheDir,
      readOnly: o.readOnly,
      snapshot: o.snapshot,
      purpose: `mount at ${this.canonical}`,
      leaseTtlMs: o.leaseTtlMs ?? DEFAULT_MOUNT_LEASE_TTL_MS,
      onLeaseLost: (err) => log.error('write lease lost: the volume is now read-only here', { error: err.message }),
      log: (m) => log.warn(m),
    })
    const recovery = this.session.recovery
    if (recovery && (recovery.replayedRecords || recovery.tornBytes || recovery.staleLogQuarantined)) {
      log.warn('recovered after an unclean shutdown', { ...recovery })
    }
    this.admission = new PortalAdmission(this.portal, {
      volumeId: this.session.volumeId,
      logBytes: () => this.session.wal?.diskBytes ?? 0,
      hasUncommitted: () => this.session.hasUncommitted,
      commit: (reason) => this.commit(reason),
      commitSoon: (reason) => {
        if (!this.committing && !this.backingOff(Date.now())) this.commit(reason).catch(() => undefined)
      },
    })
    this.session.fs.admit = (bytes) => this.admission.admit(bytes)
    this.portal.ownLogBytes = () => this.admission.ownLogBytes

    this.device = await FuseDevice.mount({
      mountpoint: this.canonical,
      source: `s0fs:${o.snapshot ?? o.volume}`,
      readOnly: o.readOnly || !!o.snapshot,
      allowOther: o.allowOther,
      busyPollUs: o.busyPollUs,
    })
    this.adapter = new FuseAdapter(this.device, this.session.fs, {
      fsync: () => this.fsync(),
      onError: (op, err) => log.error('operation failed', { op, error: (err as Error).message }),
      onInit: () => void this.tuneKernelCache(),
    }, { writebackCache: o.writebackCache, xattrs: o.xattrs })
    // Changes made through the control socket bypass the kernel: make it forget what they touched.
    this.files = new VolumeFiles(this.session.fs, {
      onChange: (change) => {
        this.lastWrite = Date.now()
        for (const { parent, name } of change.names) this.adapter.invalidateEntry(parent, name)
        // The kernel drops a directory's cached listing only when told about the directory itself:
        // invalidating a name it never looked up leaves `ls` showing the old contents.
        const parents = new Set(change.names.map((n) => n.parent))
        for (const ino of new Set([...parents, ...change.inodes])) this.adapter.invalidateInode(ino)
      },
    })
    await raiseServingPriority()
    this.device.start((h, body) => {
      this.lastRequest = Date.now()
      if (h.opcode === 16 /* WRITE */) this.lastWrite = this.lastRequest
      this.adapter.handle(h, body)
    })
    this.device.closed.then(() => void this.stop('unmounted'))

    const paths = recordPaths(o.runDir, this.canonical)
    try {
      this.control = await serveControl(paths.socket, (req, payload, session) => this.onControl(req, payload, session).catch((err) => Promise.reject(asControlError(err))))
    } catch (err) {
      // Nobody could reach this daemon: do not leave the mount up without it.
      await this.device.unmount().catch(() => undefined)
      throw err
    }
    await writeRecord(o.runDir, {
      pid: process.pid,
      mountpoint: this.canonical,
      repo: o.repoDisplay,
      repoId: o.repo.id,
      volume: o.volume,
      snapshot: o.snapshot,
      readOnly: this.session.readOnly,
      writebackCache: !!o.writebackCache,
      socket: paths.socket,
      log: paths.log,
      started: this.started.toISOString(),
    })
    if (o.metrics) {
      this.metrics = await serveMetrics(o.metrics.host, o.metrics.port, () => this.status())
      log.info('metrics', { url: this.metrics.url })
    }
    if (!this.session.readOnly) this.timer = setInterval(() => void this.tick(), TICK_MS)
    this.stopTrimmer = startHeapTrimmer(() => Date.now() - this.lastRequest)
    this.running = true
    log.info('mounted', { volume: o.snapshot ? `${o.volume}@${o.snapshot}` : o.volume, mountpoint: o.mountpoint, readOnly: this.session.readOnly })
    if (this.stopAsked) void this.stop(this.stopAsked)
  }

  /**
   * Raises the mount's readahead (its backing device's read_ahead_kb) to one
   * full-size request and, with the writeback cache, its dirty-page limit
   * (max_bytes). Set after INIT, which can only lower the readahead; best
   * effort (sysfs).
   */
  private async tuneKernelCache(): Promise<void> {
    const device = s0fsDevice(this.canonical)
    if (!device) return
    const settings: [string, number][] = [['read_ahead_kb', READAHEAD_KB]]
    if (this.options.writebackCache) settings.push(['max_bytes', Math.min(WRITEBACK_DIRTY_BYTES, Math.floor(this.options.cacheBytes / 4))])
    for (const [name, value] of settings) {
      try {
        await fsp.writeFile(`/sys/class/bdi/${device}/${name}`, String(value))
      } catch (err) {
        // sysfs is often read-only in containers: the mount works with the kernel's defaults.
        this.options.log.debug('could not tune the mount in sysfs', { device, name, error: (err as Error).message })
      }
    }
  }

  /** Background work: commit when due, idle, or under pressure. */
  private async tick(): Promise<void> {
    if (this.committing || this.stopping || this.session.fs.failed) return
    const now = Date.now()
    const due = now - this.lastCommit >= (this.options.commitIntervalMs ?? 5_000)
    const idle = now - this.lastWrite >= IDLE_MS
    if (this.backingOff(now)) return
    const pressure = (this.session.wal?.diskBytes ?? 0) > COMMIT_PRESSURE_BYTES || this.admission.filling() || this.session.metadataPressure
    if (this.session.hasUncommitted && (due || idle || pressure)) {
      // A failed background commit is logged (and retried with backoff) by commit(); it must not escape a timer.
      await this.commit('background').catch(() => undefined)
    }
  }

  /** After failed commits, background commits wait (1 s, doubling, at most 30 s) before trying again. */
  private backingOff(now: number): boolean {
    const backoff = this.commitFailures ? Math.min(30_000, 1000 * 2 ** this.commitFailures) : 0
    return backoff > 0 && now - this.lastCommit < backoff
  }

  private async commit(reason: string): Promise<void> {
    if (this.committing) await this.committing.catch(() => undefined)
    const attempt = this.session.commit()
    this.committing = attempt
    try {
      const result = await attempt
      this.lastCommit = Date.now()
      this.commitFailures = 0
      this.lastCommitError = undefined
      if (result) this.options.log.debug('committed', { reason, generation: result.generation, pages: result.pages, ms: Math.round(result.ms) })
    } catch (err) {
      this.lastCommit = Date.now()
      this.commitFailures++
      this.lastCommitError = (err as Error).message
      const level = err instanceof LeaseLostError ? 'error' : 'warn'
      this.options.log[level]('commit failed; changes stay in the local log and are retried', { reason, error: (err as Error).message })
      throw err
    } finally {
      this.committing = undefined
    }
  }

  private async fsync(): Promise<void> {
    if (this.session.readOnly) return
    if (this.options.sync === 'local') return this.session.syncLocal()
    // --sync=remote: durable in the bucket, or EIO after the deadline — never a false success.
    await this.session.syncLocal()
    const timeoutMs = this.options.syncTimeoutMs ?? REMOTE_SYNC_DEADLINE_MS
    const deadline = Date.now() + timeoutMs
    let timer: NodeJS.Timeout | undefined
    // A commit attempt can itself take long against a failing store (retries): the deadline cuts it short.
    const expired = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new FsError('EIO', `fsync could not reach the bucket within ${Math.round(timeoutMs / 1000)} s`)), timeoutMs)
    })
    expired.catch(() => undefined)
    try {
      for (;;) {
        try {
          await Promise.race([this.commit('fsync'), expired])
          return
        } catch (err) {
          if (err instanceof FsError) throw err
          if (err instanceof LeaseLostError || Date.now() > deadline) throw new FsError('EIO', `fsync could not reach the bucket: ${(err as Error).message}`)
          await Promise.race([sleep(500), expired])
        }
      }
    } finally {
      clearTimeout(timer)
    }
  }

  private async onControl(req: ControlRequest, payload: Buffer, session: ControlSession): Promise<ControlResult> {
    if (req.op.startsWith('fs.')) {
      if (this.session.readOnly && !['fs.stat', 'fs.list', 'fs.readlink', 'fs.read'].includes(req.op)) throw new FsError('EROFS', 'this mount is read-only')
      return serveFileOp(this.files, req, payload, session, { rewriteExisting: !this.options.writebackCache })
    }
    switch (req.op) {
      case 'status':
        return this.status()
      case 'commit':
        await this.commit('requested')
        return { generation: this.session.generation }
      case 'snapshot': {
        if (typeof req.name !== 'string') throw new Error('snapshot needs a name')
        const t0 = performance.now()
        if (!this.session.readOnly) await this.commit('snapshot')
        await this.session.snapshot(req.name)
        return { name: req.name, generation: this.session.generation, ms: performance.now() - t0 }
      }
      case 'unmount':
        // Unmount first, as umount(8) would: a busy mount stays up (and keeps serving) unless asked to detach lazily.
        if (req.lazy !== true) {
          await this.device.unmount(false).catch((err) => {
            throw err instanceof MountInUseError ? new ControlError(err.message, 'EBUSY', EXIT.busy) : err
          })
        }
        await this.stop('s0fs umount')
        if (this.finalCommitError) {
          throw new ControlError(
            `unmounted, but the final commit failed (${this.finalCommitError}); every change is kept in the local log under ${this.options.cacheDir}, and the next mount of volume ${this.options.volume} replays and commits it`,
            'EIO',
            EXIT.unavailable,
          )
        }
        return { unmounted: true, generation: this.session.generation }
      default:
        throw new Error(`unknown control op ${JSON.stringify(req.op)}`)
    }
  }

  status(): Record<string, unknown> {
    const fs = this.session.fs
    const blobStats = fs.blobs.stats
    const store = this.options.repo.store.counters
    return {
      pid: process.pid,
      volume: this.options.volume,
      snapshot: this.options.snapshot,
      mountpoint: this.options.mountpoint,
      readOnly: this.session.readOnly,
      generation: this.session.generation,
      uptimeSeconds: Math.round((Date.now() - this.started.getTime()) / 1000),
      lastCommitAgeSeconds: Math.round((Date.now() - this.lastCommit) / 1000),
      lastCommitError: this.lastCommitError,
      dirtyBytes: fs.pendingBytes,
      dirtyFiles: fs.dirty.size,
      walBytes: this.session.wal?.diskBytes ?? 0,
      pendingUploadBytes: fs.blobs.pendingUploadBytes,
      cacheBytes: this.portal.cache.bytes,
      cache: this.portal.cache.stats,
      pageCache: this.options.repo.pages.stats,
      blobs: blobStats,
      store,
      lease: this.session.lease ? { epoch: this.session.lease.epoch, expires: new Date(this.session.lease.expires).toISOString(), lost: this.session.lease.lost } : undefined,
      ops: Object.fromEntries(this.adapter.stats),
      fuse: { busyPollUs: this.device.busyPollUs, busyPolled: this.device.busyPolled },
      metricsUrl: this.metrics?.url,
      rssBytes: process.memoryUsage.rss(),
      peakRssBytes: peakRssBytes(),
      memory: process.memoryUsage(),
    }
  }

  /** Unmounts, commits, releases the lease. Safe to call more than once. */
  stop(reason: string): Promise<void> {
    this.stopping ??= (async () => {
      const log = this.options.log
      log.info('stopping', { reason })
      if (this.timer) clearInterval(this.timer)
      this.stopTrimmer?.()
      await this.committing?.catch(() => undefined)
      await this.device.unmount().catch((err) => log.warn('unmount failed', { error: err.message }))
      // Requests on files still open after a lazy unmount keep coming until the last one closes.
      await Promise.race([this.device.closed, sleep(10_000)])
      try {
        await this.session.close()
      } catch (err) {
        this.finalCommitError = (err as Error).message
        log.error('final commit failed; the local log keeps every change and the next mount replays it', { error: (err as Error).message })
      }
      this.control?.close()
      this.metrics?.server.close()
      await removeRecord(this.options.runDir, this.canonical).catch(() => undefined)
      await this.options.repo.close().catch((err) => log.warn('closing the repository failed', { error: err.message }))
      log.info('stopped', { reason, generation: this.session.generation, peakRssMiB: Math.round(peakRssBytes() / 1048576) })
    })().finally(() => this.resolveDone())
    return this.stopping
  }
}

/**
 * Errors of snapshot and fork names, as the client should see them: an errno
 * code (the HTTP API's status) and the CLI's exit status, as when the same
 * command runs without a mount.
 */
function asControlError(err: unknown): unknown {
  if (err instanceof RefExistsError) return new ControlError(err.message, 'EEXIST', EXIT.exists)
  if (err instanceof RefNotFoundError) return new ControlError(err.message, 'ENOENT', EXIT.notFound)
  if (err instanceof InvalidNameError) return new ControlError(err.message, 'EINVAL', EXIT.usage)
  return err
}

export class MountBusyError extends Error {
  readonly exitCode = 7
  constructor(message: string) {
    super(message)
    this.name = 'MountBusyError'
  }
}
