import { randomBytes } from 'node:crypto'
import { promises as fsp } from 'node:fs'
import path from 'node:path'
import { FileSystem, flushedSegments, flushFrozen, flushPending, FsError } from '../fs/index.js'
import { Mutex } from '../fs/mutex.js'
import {
  acquireLease,
  HeadConflictError,
  LeaseLostError,
  PackWriter,
  packKey,
  Tree,
  type Lease,
  type PageRef,
  type VolumeHead,
} from '../meta/index.js'
import { segmentKey } from '../blob/index.js'
import { Wal } from '../portal/index.js'
import { crashPoint } from '../util/crash-points.js'
import { VolumeFiles, type VolumeFilesOptions } from './files.js'
import { readGcNotice } from './gc-notice.js'
import type { Repository } from './repository.js'

/** Changed metadata pages held before a commit is forced (tens of KiB each in memory; see metadataPressure). */
export const DIRTY_PAGE_BUDGET = 256

/** Pending bytes at which a long write through `files()` flushes, and at which it commits. */
const MAINTAIN_FLUSH_BYTES = 64 * 1024 * 1024
const MAINTAIN_COMMIT_BYTES = 256 * 1024 * 1024

export interface SessionOptions {
  /** Node-local directory for the log (and, with the mount, the cache). */
  portalDir: string
  /** Open read-only: no lease, no log; writes fail with EROFS. */
  readOnly?: boolean
  /** Open this snapshot (read-only) instead of the volume's head. */
  snapshot?: string
  leaseTtlMs?: number
  /** Who holds the lease, as shown to a refused second writer. */
  purpose?: string
  onLeaseLost?: (err: LeaseLostError) => void
  /** Warnings (stale logs, recovery) go here. */
  log?: (message: string) => void
}

export interface CommitResult {
  generation: number
  root: PageRef | null
  pages: number
  /** Log sequence number covered by this commit. */
  walSeq: number
  ms: number
}

export interface RecoveryReport {
  replayedRecords: number
  /** Logged flushes not replayed because their segments are gone (their bytes came from the log). */
  skippedFlushes: number
  tornBytes: number
  staleLogQuarantined?: string
  orphansPurged: number
}

/**
 * One open volume: its filesystem, and for a writer the lease, the log and
 * the commit protocol.
 *
 * Commit: flush pending bytes to blobs (no lock held), then under the lock
 * flush what arrived meanwhile, freeze the tree and note the log position;
 * then, with writers running again, persist the frozen tree's new pages as one
 * pack, check the lease, and move the head by compare-and-swap. The head
 * records the log position it covers, so after a crash the log is replayed
 * from just after it.
 */
export class VolumeSession {
  readonly fs: FileSystem
  recovery?: RecoveryReport
  private readonly commitLock = new Mutex()
  private committedSeq: number
  /** The latest background deletion of committed log files (see dropLog). */
  private logDrop: Promise<void> = Promise.resolve()
  private closed = false
  private gcTimer?: NodeJS.Timeout
  private log?: (message: string) => void

  private constructor(
    readonly repo: Repository,
    readonly name: string,
    private head: VolumeHead,
    private etag: string,
    readonly lease: Lease | undefined,
    readonly wal: Wal | undefined,
    fs: FileSystem,
    readonly snapshotName?: string,
  ) {
    this.fs = fs
    this.committedSeq = wal?.seq ?? 0
  }

  get volumeId(): string {
    return this.head.volumeId
  }
  get generation(): number {
    return this.head.generation
  }
  get currentHead(): VolumeHead {
    return { ...this.head }
  }
  get readOnly(): boolean {
    return !this.wal
  }
  /**
   * A commit is due now, whatever the clock says: the tree holds too many
   * changed pages. Changed pages stay in memory in their expanded form until
   * a commit writes them, so this bounds the writer's memory.
   */
  get metadataPressure(): boolean {
    return this.fs.tree.dirtyPages >= DIRTY_PAGE_BUDGET
  }

  /** Whether anything changed since the last commit. */
  get hasUncommitted(): boolean {
    return (this.wal?.seq ?? 0) > this.committedSeq || this.fs.dirty.size > 0
  }

  static async open(repo: Repository, name: string, options: SessionOptions): Promise<VolumeSession> {
    const log = options.log ?? (() => {})
    if (options.snapshot) {
      const snap = await repo.refs.requireSnapshot(options.snapshot)
      const tree = new Tree(repo.pages, snap.root ?? undefined)
      const head: VolumeHead = { kind: 'volume', name: snap.volume, volumeId: snap.volumeId, generation: snap.generation, root: snap.root, created: snap.created, updated: snap.created }
      return new VolumeSession(repo, snap.volume, head, '', undefined, undefined, new FileSystem({ tree, blobs: await repo.blobStore() }), snap.name)
    }
    if (options.readOnly) {
      const { head, etag } = await repo.refs.requireVolume(name)
      const tree = new Tree(repo.pages, head.root ?? undefined)
      return new VolumeSession(repo, name, head, etag, undefined, undefined, new FileSystem({ tree, blobs: await repo.blobStore() }))
    }
    const found = await repo.refs.requireVolume(name)
    // Before the lease and before any deduplication: segments a GC run is deleting are off limits.
    const notice = await readGcNotice(repo.store, repo.keys)
    if (notice) (await repo.blobStore()).condemn(notice.segments)
    let session: VolumeSession | undefined
    const lease = await acquireLease(repo.store, repo.keys, name, found.head.volumeId, {
      ttlMs: options.leaseTtlMs,
      purpose: options.purpose,
      gcSeen: notice?.id,
      onLost: (err) => {
        session?.fs.fail(err)
        options.onLeaseLost?.(err)
      },
    })
    try {
      // Read the head after taking the lease: it cannot move under us from here on.
      const { head, etag } = await repo.refs.requireVolume(name)
      const tree = new Tree(repo.pages, head.root ?? undefined)
      const walDir = path.join(options.portalDir, 'volumes', head.volumeId, 'wal')
      const report: RecoveryReport = { replayedRecords: 0, skippedFlushes: 0, tornBytes: 0, orphansPurged: 0 }
      const recovered = await Wal.recover(walDir, repo.keys, head.volumeId)
      let wal: Wal
      let replayFrom: number | undefined
      if (recovered) {
        report.tornBytes = recovered.tornBytes
        const h = recovered.header
        if (head.writer?.session === h.session) replayFrom = head.writer.walSeq
        else if (head.generation === h.baseGeneration) replayFrom = 0
        if (replayFrom === undefined) {
          // The head moved on without this log (another writer, or a restore): it no longer applies.
          const quarantine = `${walDir}.stale-${new Date().toISOString().replace(/[:.]/g, '-')}`
          await fsp.rename(walDir, quarantine)
          report.staleLogQuarantined = quarantine
          log(`volume ${name}: local log of session ${h.session.slice(0, 8)} does not continue head generation ${head.generation}; kept it aside at ${quarantine}`)
        }
      }
      if (recovered && replayFrom !== undefined) wal = await Wal.resume(walDir, repo.keys, recovered, replayFrom)
      else wal = await Wal.create(walDir, repo.keys, { volumeId: head.volumeId, session: randomBytes(12).toString('hex'), baseGeneration: head.generation })
      const fs = new FileSystem({ tree, blobs: await repo.blobStore({ forWriting: true }), wal })
      session = new VolumeSession(repo, name, head, etag, lease, wal, fs)
      session.log = options.log
      if (recovered && replayFrom !== undefined) {
        const records = recovered.records.filter((r) => r.seq > replayFrom!)
        // A flush logged after the head this log continues wrote segments no head names yet (the crash came
        // first), and GC may have deleted them since. The bytes it moved are still in this log: such a flush
        // is skipped, and its data stays pending, to be flushed again.
        const gone = await missingSegments(repo, records, notice?.segments ?? [])
        for (const record of records) {
          if (gone.size && flushedSegments(record.kind, record.payload).some((seg) => gone.has(seg))) {
            report.skippedFlushes++
            continue
          }
          await fs.replay(record)
          report.replayedRecords++
        }
        if (report.skippedFlushes) log(`volume ${name}: ${report.skippedFlushes} logged flushes pointed at deleted segments; their data was replayed from the log instead`)
        session.committedSeq = replayFrom
        if (report.replayedRecords > 0) log(`volume ${name}: replayed ${report.replayedRecords} log records after an unclean shutdown`)
      }
      report.orphansPurged = await fs.purgeOrphans()
      session.recovery = report
      lease.startRenewing()
      session.watchGc(options.leaseTtlMs ?? 30_000)
      return session
    } catch (err) {
      await lease.release().catch(() => undefined)
      throw err
    }
  }

  /**
   * Path-level access to this volume's files (read-only for a snapshot or a
   * read-only session). Long writes keep memory and the log bounded by
   * flushing and committing as they go.
   */
  files(options: Omit<VolumeFilesOptions, 'maintain'> = {}): VolumeFiles {
    return new VolumeFiles(this.fs, { ...options, maintain: () => this.maintain() })
  }

  private async maintain(): Promise<void> {
    if (this.readOnly) return
    if (this.metadataPressure || this.fs.pendingBytes >= MAINTAIN_COMMIT_BYTES) await this.commit()
    else if (this.fs.pendingBytes >= MAINTAIN_FLUSH_BYTES) await flushPending(this.fs)
  }

  /** Reads the GC notice at the lease renewal rate and acts on a new one (see gc-notice.ts). */
  private watchGc(ttlMs: number): void {
    let checking = false
    this.gcTimer = setInterval(() => {
      if (checking || this.closed) return
      checking = true
      this.actOnGcNotice()
        .catch((err) => this.log?.(`volume ${this.name}: GC notice check failed (will retry): ${(err as Error).message}`))
        .finally(() => (checking = false))
    }, Math.max(50, Math.min(10_000, Math.floor(ttlMs / 3))))
    this.gcTimer.unref()
  }

  /** Stops deduplicating against a new notice's segments, commits what was placed before, then acknowledges. */
  async actOnGcNotice(): Promise<void> {
    if (!this.lease) return
    const notice = await readGcNotice(this.repo.store, this.repo.keys)
    if (!notice || notice.id === this.lease.info.gcSeen) return
    this.fs.blobs.condemn(notice.segments)
    if (this.hasUncommitted) await this.commit()
    await this.lease.acknowledgeGc(notice.id)
  }

  /** Makes everything so far durable on local disk (the log). */
  async syncLocal(): Promise<void> {
    if (!this.wal) return
    if (this.fs.failed) throw this.fs.failed
    try {
      await this.wal.sync()
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOSPC') throw new FsError('ENOSPC', 'the portal disk is full; written data is held in memory until space returns')
      throw err
    }
  }

  /** Publishes everything so far as a new head generation; returns undefined when nothing changed. */
  async commit(): Promise<CommitResult | undefined> {
    if (!this.wal || !this.lease) return undefined
    return this.commitLock.run(() => this.commitLocked())
  }

  /**
   * A commit freezes the volume at a log position (briefly, under the lock:
   * the tree forks and the pending pieces are copied), stores what was
   * pending then without holding writers back, and publishes the frozen tree
   * with its new extents. Writes made meanwhile stay pending for the next one.
   */
  private async commitLocked(): Promise<CommitResult | undefined> {
    const wal = this.wal!
    const lease = this.lease!
    if (this.fs.failed) throw this.fs.failed
    const started = performance.now()
    const frozen = await this.fs.lock.run(async () => {
      const seq = wal.seq
      if (seq === this.committedSeq && this.fs.dirty.size === 0) return undefined
      wal.rotate()
      return { ...this.fs.freezePending(), seq, plannedAt: this.fs.beginFlush() }
    })
    if (!frozen) return undefined
    let through: number
    try {
      through = (await flushFrozen(this.fs, frozen)).through
    } finally {
      this.fs.endFlush()
      this.fs.releaseFrozen()
    }
    const root = frozen.tree.freeze()
    const pack = new PackWriter(this.repo.keys, this.repo.pages.capacity)
    const persisted = root ? Tree.persist(root, pack) : { ref: null, written: [] }
    try {
      // The log (through the records this commit's flush added) and the pages must both be durable
      // before the head names them; neither needs the other, so their fsyncs overlap.
      await Promise.all([wal.sync(), pack.pageCount > 0 ? this.repo.store.put(packKey(pack.id), pack.finish()) : undefined])
      crashPoint('commit-before-head')
      lease.assertValid()
      const next: VolumeHead = {
        ...this.head,
        generation: this.head.generation + 1,
        root: persisted.ref,
        updated: new Date().toISOString(),
        // Replay after a crash starts past `through`: the flush's own extents records are in this tree too
        // (naming only frozen.seq made every clean unmount after writes replay them, as if it had crashed).
        writer: { session: wal.header.session, leaseEpoch: lease.epoch, walSeq: through },
      }
      await this.writeHead(next)
    } catch (err) {
      Tree.abandon(persisted.written)
      if (err instanceof HeadConflictError || err instanceof LeaseLostError) this.fs.fail(err)
      throw err
    }
    this.committedSeq = through
    this.repo.pages.rememberWritten(pack)
    this.fs.tree.compact()
    crashPoint('commit-before-log-drop')
    await this.dropLog(frozen.seq)
    return { generation: this.head.generation, root: persisted.ref, pages: pack.pageCount, walSeq: through, ms: performance.now() - started }
  }

  /**
   * Points the volume's head at `next`. A 412 can be this session's own
   * earlier head write whose reply was lost (the connection dropped after the
   * server stored it): that commit failed and kept the old ETag. The stored
   * head then names this session and lease epoch at the generation after
   * ours, which no other writer can write; it is taken as ours and `next`
   * goes on top of it, instead of failing the mount as if another writer had
   * taken over.
   */
  private async writeHead(next: VolumeHead): Promise<void> {
    try {
      this.etag = await this.repo.refs.updateVolume(next, this.etag)
    } catch (err) {
      if (!(err instanceof HeadConflictError)) throw err
      const { head: stored, etag } = await this.repo.refs.requireVolume(this.name)
      const ours = stored.generation === this.head.generation + 1 && stored.writer?.session === next.writer?.session && stored.writer?.leaseEpoch === next.writer?.leaseEpoch
      if (!ours) throw err
      this.head = stored
      this.etag = etag
      next = { ...next, generation: stored.generation + 1 }
      this.etag = await this.repo.refs.updateVolume(next, this.etag)
    }
    this.head = next
  }

  /**
   * Deletes the log files this commit made redundant, once the reads that
   * began before it (which may hold locations in them) have ended. Waiting for
   * every read to end would, under steady reads, never drop anything; so when
   * reads are in flight the drop is left to finish in the background.
   */
  private dropLog(seq: number): Promise<void> {
    const wal = this.wal!
    const drained = this.fs.reads.drained()
    const drop = this.logDrop
      .then(() => drained)
      .then(() => wal.dropThrough(seq, (file) => this.fs.logFileInUse(file)))
      .then(
        () => undefined,
        (err: Error) => this.log?.(`could not delete committed log files (retried after the next commit): ${err.message}`),
      )
    this.logDrop = drop
    return this.fs.reads.inFlight === 0 ? drop : Promise.resolve()
  }

  /** Commits, then records the head as an immutable snapshot. */
  async snapshot(snapshotName: string): Promise<void> {
    if (!this.readOnly) await this.commit()
    await this.repo.refs.createSnapshot({
      kind: 'snapshot',
      name: snapshotName,
      volume: this.name,
      volumeId: this.head.volumeId,
      generation: this.head.generation,
      root: this.head.root,
      created: new Date().toISOString(),
    })
  }

  /** Final commit, then lease released and log closed. The log is kept if the commit failed. */
  async close(): Promise<void> {
    if (this.closed) return
    this.closed = true
    clearInterval(this.gcTimer)
    try {
      if (!this.readOnly && !this.fs.failed) await this.commit()
    } finally {
      await this.logDrop
      await this.wal?.close()
      await this.lease?.release().catch(() => undefined)
    }
  }

  /**
   * Simulates a crash for tests: drops what is in memory and log writes not
   * yet issued, commits nothing. The lease is released so the test can reopen
   * at once (a real crash leaves it to expire, or to the same host's next mount).
   */
  async abandon(): Promise<void> {
    this.closed = true
    clearInterval(this.gcTimer)
    await this.wal?.abandon()
    await this.lease?.release().catch(() => undefined)
  }
}

/**
 * The segments logged flushes in `records` point at that the store no longer
 * has, or that a GC run in progress is about to delete (its notice names
 * them; this session has acknowledged it, so GC will not wait for its next
 * commit to name them).
 */
async function missingSegments(repo: Repository, records: readonly { kind: number; payload: Buffer }[], condemned: readonly string[]): Promise<Set<string>> {
  const segs = new Set(records.flatMap((r) => flushedSegments(r.kind, r.payload)))
  const doomed = new Set(condemned)
  const gone = new Set<string>()
  for (const seg of segs) if (doomed.has(seg) || !(await repo.store.head(segmentKey(seg)))) gone.add(seg)
  return gone
}
