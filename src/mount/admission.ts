import { FsError } from '../fs/index.js'
import type { Portal } from '../portal/index.js'
import { sleep } from '../store/index.js'

/**
 * Admission control for writes into the portal. One byte cap covers the logs
 * (this mount's and other mounts' on the node) and the read cache, and a
 * write is admitted only when its log record fits under it:
 *
 * - clean cache is evicted first (to stay under the cap, or to make room on
 *   a full disk);
 * - when the logs alone leave no room, the writer waits for a commit, after
 *   which the committed log files are dropped;
 * - commits start early, in the background, once the logs pass half the cap,
 *   so that writers seldom have to wait;
 * - room is reserved from admission until the record is in the log, so
 *   concurrent writers cannot all squeeze into the same free bytes;
 * - data and cache stop short of the cap by a headroom for metadata records
 *   (see `Portal.dataCapBytes`);
 * - a full disk (less than the portal's reserve free) answers ENOSPC.
 */

/** What admission needs from the mount's writer session. */
export interface AdmissionWriter {
  readonly volumeId: string
  /** Bytes of this mount's log on disk, including records not yet written out. */
  logBytes(): number
  hasUncommitted(): boolean
  /** Commits now (waits for a commit in progress first); failures are the caller's to ignore. */
  commit(reason: string): Promise<void>
  /** Starts a commit in the background unless one is running or failures are backing off. */
  commitSoon(reason: string): void
}

/** A data record's frame beyond the data: length prefix 4, seal 45, record header 13, data header 28. */
const RECORD_OVERHEAD = 90
/** The logs' share of the cap past which a commit starts in the background. */
const EARLY_COMMIT_FRACTION = 0.5
/** Free space is checked (statfs) every few MiB admitted or half a second. */
const DISK_CHECK_BYTES = 8 * 1024 * 1024
const DISK_CHECK_MS = 500

export class PortalAdmission {
  /** Bytes admitted whose records are not yet counted in the log's size. */
  private reserved = 0
  private sinceDiskCheck = 0
  private lastDiskCheck = 0

  constructor(
    private readonly portal: Portal,
    private readonly writer: AdmissionWriter,
  ) {}

  /** This mount's log, with the room reserved for admitted writes. */
  get ownLogBytes(): number {
    return this.writer.logBytes() + this.reserved
  }

  /** Every log on the node that counts against the cap. */
  get logBytes(): number {
    return this.ownLogBytes + this.portal.dirtyElsewhere
  }

  /** Whether the logs (with `incoming` more bytes) have passed the share of the cap at which commits start early. */
  filling(incoming = 0): boolean {
    return this.logBytes + incoming > this.portal.capBytes * EARLY_COMMIT_FRACTION
  }

  /**
   * Waits until `bytes` of data fit in the portal; call the returned function
   * once they are in the log. Without a promise when the room is there and
   * no disk check or early commit is due: every write asks.
   */
  admit(bytes: number): (() => void) | Promise<() => void> {
    const need = bytes + RECORD_OVERHEAD
    if (this.mayTakeNow(need) && this.take(need)) {
      this.sinceDiskCheck += need
      return this.releaser(need)
    }
    return this.reserve(need).then(() => this.releaser(need))
  }

  private releaser(bytes: number): () => void {
    let released = false
    return () => {
      if (released) return
      released = true
      this.reserved -= bytes
    }
  }

  /** Whether `bytes` may be taken at once: no disk check due (see diskIsFull), and the logs not filling. */
  private mayTakeNow(bytes: number): boolean {
    if (this.sinceDiskCheck + bytes >= DISK_CHECK_BYTES || Date.now() - this.lastDiskCheck >= DISK_CHECK_MS) return false
    return !this.filling(bytes)
  }

  /**
   * Takes the room if it is there. The check and the taking must happen in
   * one synchronous step: with an await between them, other writers could
   * pass the same check for the same bytes.
   */
  private take(bytes: number): boolean {
    if (this.logBytes + this.portal.cache.bytes + bytes > this.portal.dataCapBytes) return false
    this.reserved += bytes
    return true
  }

  /** Waits until `bytes` fit under the cap, making room, and reserves them. */
  private async reserve(bytes: number): Promise<void> {
    let commits = 0
    for (let attempt = 0; ; attempt++) {
      if (await this.diskIsFull(bytes, attempt > 0)) {
        // Clean cache gives way first: windows read from the bucket, or written through as segments
        // uploaded, may be what fills a disk smaller than the cap.
        if ((await this.portal.cache.shrink(this.portal.reserveBytes + bytes)) > 0) continue
        if (!this.writer.hasUncommitted() || commits > 3) throw this.diskFull()
        // Committing lets the log be dropped, which may be what fills the disk.
        await this.writer.commit('portal disk full').catch(() => undefined)
        await sleep(Math.min(2_000, 100 * 2 ** commits++))
        continue
      }
      if (this.filling(bytes)) this.writer.commitSoon('portal filling')
      if (this.take(bytes)) return
      if (this.portal.cache.bytes > 0) {
        await this.portal.cache.enforceCap(bytes)
        if (this.take(bytes)) return
      }
      // The logs leave no room: wait for a commit to drop them.
      await this.writer.commit('portal full').catch(() => undefined)
      if (this.take(bytes)) return
      await sleep(Math.min(500, 10 * 2 ** attempt))
    }
  }

  private async diskIsFull(bytes: number, now: boolean): Promise<boolean> {
    this.sinceDiskCheck += bytes
    if (!now && this.sinceDiskCheck < DISK_CHECK_BYTES && Date.now() - this.lastDiskCheck < DISK_CHECK_MS) return false
    this.sinceDiskCheck = 0
    this.lastDiskCheck = Date.now()
    await this.portal.otherDirtyBytes(this.writer.volumeId)
    return (await this.portal.freeBytes()) <= this.portal.reserveBytes + bytes
  }

  private diskFull(): FsError {
    return new FsError('ENOSPC', `the portal's disk (${this.portal.dir}) is full`)
  }
}
