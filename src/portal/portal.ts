import { promises as fsp } from 'node:fs'
import path from 'node:path'
import type { ObjectStore } from '../store/index.js'
import { SegmentCache } from './segment-cache.js'

/**
 * The node-local portal directory, shared by every volume mounted on the node:
 *
 *   volumes/<volume id>/wal/   each writer's log (dirty data and metadata)
 *   cache/<xx>/<segment>.<n>   windows of segments read from the bucket or stored there
 *
 * One byte cap covers both. Clean cache is evicted first; when the logs alone
 * reach the cap, writers wait for the flusher; when the disk itself runs low,
 * writes fail with ENOSPC rather than risk a torn log.
 */

export interface PortalOptions {
  capBytes: number
  /** Keep at least this much of the disk free. */
  reserveBytes?: number
}

export class Portal {
  readonly cache: SegmentCache
  private dirtyElsewhereBytes = 0
  /** Bytes of this mount's own log, with room reserved for admitted writes (set by the mount daemon). */
  ownLogBytes: () => number = () => 0
  private lastScan = 0

  constructor(
    readonly dir: string,
    store: ObjectStore,
    readonly options: PortalOptions,
  ) {
    // The cap covers everything in the portal: the cache gets what the logs (this mount's and others') leave.
    this.cache = new SegmentCache(store, path.join(dir, 'cache'), {
      capBytes: () => Math.max(0, this.dataCapBytes - this.dirtyElsewhereBytes - this.ownLogBytes()),
      // The cache never takes the disk's last free space: it keeps twice the reserve free, so the logs
      // (which answer ENOSPC at the reserve) have room to grow before cache must be evicted for them.
      diskRoom: async (bytes) => (await this.freeBytes()) - bytes > 2 * this.reserveBytes,
    })
  }

  get capBytes(): number {
    return this.options.capBytes
  }

  /**
   * What written data and cached windows may fill together: the cap less a
   * headroom for metadata records (creates, renames, attribute changes),
   * which are logged without waiting for room — they are small, and the
   * commits that pressure starts drop them with the data. 1/32 of the cap,
   * at most 8 MiB.
   */
  get dataCapBytes(): number {
    return this.options.capBytes - Math.min(8 * 1024 * 1024, Math.floor(this.options.capBytes / 32))
  }

  get reserveBytes(): number {
    return this.options.reserveBytes ?? 64 * 1024 * 1024
  }

  volumeDir(volumeId: string): string {
    return path.join(this.dir, 'volumes', volumeId)
  }

  async init(): Promise<void> {
    await fsp.mkdir(path.join(this.dir, 'volumes'), { recursive: true, mode: 0o700 })
    await fsp.mkdir(path.join(this.dir, 'cache'), { recursive: true, mode: 0o700 })
    await this.cache.enforceCap()
  }

  /** Free bytes on the portal's filesystem. */
  async freeBytes(): Promise<number> {
    const st = await fsp.statfs(this.dir)
    return st.bavail * st.bsize
  }

  /** Other mounts' log bytes as of the last `otherDirtyBytes` scan. */
  get dirtyElsewhere(): number {
    return this.dirtyElsewhereBytes
  }

  /**
   * Bytes of every log on the node except `ownVolume`'s (other mounts' dirty
   * data), refreshed at most every few seconds.
   */
  async otherDirtyBytes(ownVolume: string): Promise<number> {
    if (Date.now() - this.lastScan < 5_000) return this.dirtyElsewhereBytes
    this.lastScan = Date.now()
    let total = 0
    const volumes = await fsp.readdir(path.join(this.dir, 'volumes')).catch(() => [] as string[])
    for (const v of volumes) {
      if (v === ownVolume) continue
      const wal = path.join(this.dir, 'volumes', v, 'wal')
      for (const name of await fsp.readdir(wal).catch(() => [] as string[])) {
        const st = await fsp.stat(path.join(wal, name)).catch(() => undefined)
        if (st?.isFile()) total += st.size
      }
    }
    this.dirtyElsewhereBytes = total
    return total
  }
}
