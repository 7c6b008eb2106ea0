import { randomBytes } from 'node:crypto'
import { readFileSync, readlinkSync } from 'node:fs'
import { hostname } from 'node:os'
import { Packr } from 'msgpackr'
import type { RepoKeys } from '../crypto/index.js'
import { NotFoundError, PreconditionFailedError, sleep, type ObjectStore } from '../store/index.js'
import { processAlive } from '../util/process.js'

/**
 * The single-writer lease of a volume: one sealed object per volume
 * (`lease/<keyed hash>`) naming the holder, an epoch that grows with every
 * takeover, and an expiry. The holder renews it every ttl/3 by
 * compare-and-swap; a writer that cannot renew stops writing before the lease
 * can have expired anywhere, and every commit checks the lease first.
 *
 * On backends without atomic conditional writes a takeover is
 * read-check-write, confirmed by reading the lease back after a settle delay:
 * two processes racing within that window is the residual risk, stated by
 * `s0fs repo info`.
 */

const packr = new Packr({ useRecords: false })

export interface LeaseHolder {
  session: string
  host: string
  pid: number
  /** Boot ID and PID namespace: a pid can be checked for liveness only where both match ours. */
  pidScope: string
  /** What the holder does: a mount, a CLI write, the HTTP server … */
  purpose: string
}

export interface LeaseRecord {
  volumeId: string
  volume: string
  holder: LeaseHolder
  epoch: number
  acquired: number
  expires: number
  /**
   * The last GC notice this writer has acted on (see repo/gc.ts): it no longer
   * deduplicates against the segments the notice condemns, and has committed
   * everything it placed before reading it. GC deletes nothing until every
   * live writer says so.
   */
  gcSeen?: string
}

export class LeaseHeldError extends Error {
  constructor(readonly record: LeaseRecord) {
    const left = Math.max(0, Math.round((record.expires - Date.now()) / 1000))
    super(
      `volume ${JSON.stringify(record.volume)} is held by another writer: ${record.holder.purpose} on host ${record.holder.host}, pid ${record.holder.pid} (session ${record.holder.session.slice(0, 8)}), lease valid until ${new Date(record.expires).toISOString()} (${left} s); mount read-only, or wait for it to be released`,
    )
    this.name = 'LeaseHeldError'
  }
}

export class LeaseLostError extends Error {
  constructor(volume: string, detail: string) {
    super(`lost the write lease of volume ${JSON.stringify(volume)}: ${detail}; this writer has stopped writing (local changes are kept in the portal)`)
    this.name = 'LeaseLostError'
  }
}

export interface LeaseOptions {
  ttlMs?: number
  purpose?: string
  /** Extra wait after expiry before another host's lease counts as expired (clock skew allowance). */
  skewMs?: number
  /** Settle delay for the read-back on non-atomic backends. */
  settleMs?: number
  /** The GC notice the new writer has already taken into account (read before the lease). */
  gcSeen?: string
}

export function leaseKey(keys: RepoKeys, volumeName: string): string {
  return `lease/${keys.nameKey('volume', volumeName)}`
}

export class Lease {
  private etag: string
  private record: LeaseRecord
  /** Monotonic time until which this holder may write (renewal time + ttl − margin). */
  private validUntil: number
  private timer?: NodeJS.Timeout
  private lostReason?: string
  private renewing?: Promise<void>

  constructor(
    private readonly store: ObjectStore,
    private readonly keys: RepoKeys,
    private readonly objectKey: string,
    record: LeaseRecord,
    etag: string,
    private readonly ttlMs: number,
    private readonly onLost: (err: LeaseLostError) => void = () => {},
  ) {
    this.record = record
    this.etag = etag
    this.validUntil = performance.now() + ttlMs * 0.8
  }

  get epoch(): number {
    return this.record.epoch
  }
  /** The lease's object key. */
  get key(): string {
    return this.objectKey
  }
  get session(): string {
    return this.record.holder.session
  }
  get expires(): number {
    return this.record.expires
  }
  get lost(): boolean {
    return this.lostReason !== undefined || performance.now() > this.validUntil
  }
  get info(): LeaseRecord {
    return { ...this.record }
  }

  /** Throws LeaseLostError unless this holder may still write. */
  assertValid(): void {
    if (this.lostReason) throw new LeaseLostError(this.record.volume, this.lostReason)
    if (performance.now() > this.validUntil) throw new LeaseLostError(this.record.volume, 'it expired before it could be renewed (storage unreachable?)')
  }

  /** Renews in the background every ttl/3 until released. */
  startRenewing(): void {
    const interval = Math.max(50, Math.floor(this.ttlMs / 3))
    this.timer = setInterval(() => {
      this.renewing ??= this.renew()
        .catch(() => undefined)
        .finally(() => (this.renewing = undefined))
    }, interval)
    this.timer.unref()
  }

  async renew(): Promise<void> {
    if (this.lostReason) return
    const started = performance.now()
    const next: LeaseRecord = { ...this.record, expires: Date.now() + this.ttlMs }
    try {
      this.etag = await this.writeRecord(next)
      this.record = next
      this.validUntil = started + this.ttlMs * 0.8
    } catch (err) {
      if (err instanceof PreconditionFailedError) {
        this.markLost('another writer took the lease over')
        return
      }
      if (performance.now() > this.validUntil) this.markLost(`renewal failed until expiry: ${(err as Error).message}`)
      throw err
    }
  }

  /**
   * Compare-and-swap of the lease object. A 412 can be this holder's own
   * earlier write whose reply was lost (the renewal failed but the server
   * stored it): the object then still names this session at this epoch, which
   * only this holder writes (a takeover raises the epoch), so its ETag is
   * taken and the write tried again.
   */
  private async writeRecord(next: LeaseRecord): Promise<string> {
    const sealed = sealLease(this.keys, this.objectKey, next)
    try {
      return (await this.store.putIfMatch(this.objectKey, sealed, this.etag)).etag
    } catch (err) {
      if (!(err instanceof PreconditionFailedError)) throw err
      const current = await readLease(this.store, this.keys, this.record.volume)
      if (!current || current.record.epoch !== this.record.epoch || current.record.holder.session !== this.record.holder.session) throw err
      this.etag = current.etag
      return (await this.store.putIfMatch(this.objectKey, sealed, this.etag)).etag
    }
  }

  /** Records (at once, with a renewal) that this writer has acted on GC notice `id`. */
  async acknowledgeGc(id: string): Promise<void> {
    await this.renewing
    this.record = { ...this.record, gcSeen: id }
    await this.renew()
  }

  /** Gives the lease up so another writer can take it at once. */
  async release(): Promise<void> {
    if (this.timer) clearInterval(this.timer)
    await this.renewing
    if (this.lostReason) return
    const released: LeaseRecord = { ...this.record, expires: 0 }
    try {
      await this.writeRecord(released)
    } catch (err) {
      if (!(err instanceof PreconditionFailedError)) throw err
    }
    this.lostReason = 'released'
  }

  private markLost(reason: string): void {
    if (this.lostReason) return
    this.lostReason = reason
    if (this.timer) clearInterval(this.timer)
    this.onLost(new LeaseLostError(this.record.volume, reason))
  }
}

function sealLease(keys: RepoKeys, key: string, record: LeaseRecord): Buffer {
  return keys.seal('meta', packr.pack(record), `lease:${key}`)
}

export async function readLease(store: ObjectStore, keys: RepoKeys, volume: string): Promise<{ record: LeaseRecord; etag: string } | undefined> {
  const key = leaseKey(keys, volume)
  try {
    const { data, etag } = await store.getVersioned(key)
    return { record: packr.unpack(keys.open('meta', data, `lease:${key}`, `lease of ${volume}`)) as LeaseRecord, etag }
  } catch (err) {
    if (err instanceof NotFoundError) return undefined
    throw err
  }
}

/** Takes the write lease of a volume, or throws LeaseHeldError naming the holder. */
export async function acquireLease(
  store: ObjectStore,
  keys: RepoKeys,
  volume: string,
  volumeId: string,
  options: LeaseOptions & { onLost?: (err: LeaseLostError) => void } = {},
): Promise<Lease> {
  const ttlMs = options.ttlMs ?? 30_000
  const skewMs = options.skewMs ?? 2_000
  const key = leaseKey(keys, volume)
  const holder: LeaseHolder = {
    session: randomBytes(12).toString('hex'),
    host: hostname(),
    pid: process.pid,
    pidScope: pidScope(),
    purpose: options.purpose ?? 'writer',
  }
  for (let attempt = 0; attempt < 5; attempt++) {
    const current = await readLease(store, keys, volume)
    const now = Date.now()
    if (current && current.record.expires + skewMs > now) {
      // Same kernel boot and PID namespace: a holder process that died is as good as expired.
      const dead = current.record.holder.pidScope === holder.pidScope && !processAlive(current.record.holder.pid)
      if (!dead) throw new LeaseHeldError(current.record)
    }
    const record: LeaseRecord = {
      volumeId,
      volume,
      holder,
      epoch: (current?.record.epoch ?? 0) + 1,
      acquired: now,
      expires: now + ttlMs,
      gcSeen: options.gcSeen,
    }
    const sealed = sealLease(keys, key, record)
    let etag: string
    try {
      etag = current ? (await store.putIfMatch(key, sealed, current.etag)).etag : (await store.putIfAbsent(key, sealed)).etag
    } catch (err) {
      if (err instanceof PreconditionFailedError) continue // someone else moved first; look again
      throw err
    }
    if (!store.capabilities.atomicConditionalWrites) {
      await sleep(options.settleMs ?? 300)
      const check = await readLease(store, keys, volume)
      if (!check || check.record.holder.session !== holder.session) {
        if (check) throw new LeaseHeldError(check.record)
        continue
      }
      etag = check.etag
    }
    const lease = new Lease(store, keys, key, record, etag, ttlMs, options.onLost)
    return lease
  }
  throw new Error(`could not take the lease of volume ${JSON.stringify(volume)}: it keeps changing`)
}

let cachedScope: string | undefined
function pidScope(): string {
  if (cachedScope === undefined) {
    let boot = 'unknown-boot'
    let ns = 'unknown-ns'
    try {
      boot = readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim()
      ns = readlinkSync('/proc/self/ns/pid')
    } catch {
      // Not Linux, or /proc hidden: never judge other pids dead.
      boot = randomBytes(8).toString('hex')
    }
    cachedScope = `${boot}/${ns}`
  }
  return cachedScope
}

