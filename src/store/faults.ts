import { StoreUnavailableError } from './errors.js'
import { sleep } from './retry.js'
import type { Body, ListOptions, ListPage, ObjectInfo, ObjectStore, PutResult } from './types.js'

export interface FaultOptions {
  /** Probability that a request fails before reaching the inner store. */
  errorRate?: number
  /** Probability that a write reaches the inner store but the caller is told it failed. */
  lostAckRate?: number
  /** Probability that a request fails with a throttling ("SlowDown") error. */
  slowDownRate?: number
  /** Latency added to every request. */
  latencyMs?: number
  /** Probability and size of an extra latency spike. */
  spikeRate?: number
  spikeMs?: number
  /** Probability that a read returns data with one byte flipped. */
  corruptReadRate?: number
  /** Probability that a read returns only a prefix of the data. */
  truncateReadRate?: number
  /** Seed for the fault schedule, so a failing run can be replayed. */
  seed?: number
  /** Only requests for keys this matches get faults (default: every key). */
  onlyKeys?: RegExp
}

export interface FaultCounters {
  errors: number
  lostAcks: number
  slowDowns: number
  spikes: number
  corruptReads: number
  truncatedReads: number
  outageRejections: number
}

/** Thrown for injected failures; the message says it was injected so logs are not confusing. */
export class InjectedFault extends StoreUnavailableError {}

/**
 * Wraps a store and injects failures for reliability tests: transient errors,
 * lost acknowledgements, throttling, latency and spikes, full outages, and
 * corrupted or truncated reads. Deterministic for a given seed and call order.
 */
export class FaultStore implements ObjectStore {
  readonly faults: FaultCounters = { errors: 0, lostAcks: 0, slowDowns: 0, spikes: 0, corruptReads: 0, truncatedReads: 0, outageRejections: 0 }
  private outageUntil = 0
  private random: () => number

  constructor(readonly inner: ObjectStore, public options: FaultOptions = {}) {
    this.random = mulberry32(options.seed ?? 1)
  }

  get displayUrl(): string {
    return `faults+${this.inner.displayUrl}`
  }
  get capabilities() {
    return this.inner.capabilities
  }
  get counters() {
    return this.inner.counters
  }

  /** Every request fails for the next `ms` milliseconds. */
  outage(ms: number): void {
    this.outageUntil = Date.now() + ms
  }
  endOutage(): void {
    this.outageUntil = 0
  }
  get inOutage(): boolean {
    return Date.now() < this.outageUntil
  }

  async get(key: string, range?: { start: number; end?: number }): Promise<Buffer> {
    await this.before('get', key)
    return this.damage(key, await this.inner.get(key, range))
  }
  async getVersioned(key: string): Promise<{ data: Buffer; etag: string }> {
    await this.before('get', key)
    const out = await this.inner.getVersioned(key)
    return { data: this.damage(key, out.data), etag: out.etag }
  }
  async put(key: string, data: Body): Promise<PutResult> {
    await this.before('put', key)
    return this.afterWrite(key, await this.inner.put(key, data))
  }
  async putIfAbsent(key: string, data: Buffer): Promise<PutResult> {
    await this.before('put', key)
    return this.afterWrite(key, await this.inner.putIfAbsent(key, data))
  }
  async putIfMatch(key: string, data: Buffer, etag: string): Promise<PutResult> {
    await this.before('put', key)
    return this.afterWrite(key, await this.inner.putIfMatch(key, data, etag))
  }
  async head(key: string): Promise<ObjectInfo | undefined> {
    await this.before('head', key)
    return this.inner.head(key)
  }
  async listPage(prefix: string, options?: ListOptions): Promise<ListPage> {
    await this.before('list', prefix)
    return this.inner.listPage(prefix, options)
  }
  async deleteMany(keys: string[]): Promise<void> {
    await this.before('delete', keys[0] ?? '')
    return this.inner.deleteMany(keys)
  }
  close(): Promise<void> {
    return this.inner.close()
  }

  private async before(op: string, key: string): Promise<void> {
    const o = this.options
    if (o.onlyKeys && !o.onlyKeys.test(key)) return
    if (o.latencyMs) await sleep(o.latencyMs)
    if (o.spikeRate && this.random() < o.spikeRate) {
      this.faults.spikes++
      await sleep(o.spikeMs ?? 500)
    }
    if (this.inOutage) {
      this.faults.outageRejections++
      throw new InjectedFault(`injected outage: ${op} ${key}`)
    }
    if (o.errorRate && this.random() < o.errorRate) {
      this.faults.errors++
      throw new InjectedFault(`injected error: ${op} ${key}`)
    }
    if (o.slowDownRate && this.random() < o.slowDownRate) {
      this.faults.slowDowns++
      throw new InjectedFault(`injected SlowDown: ${op} ${key}`)
    }
  }

  private afterWrite(key: string, result: PutResult): PutResult {
    if (this.options.onlyKeys && !this.options.onlyKeys.test(key)) return result
    if (this.options.lostAckRate && this.random() < this.options.lostAckRate) {
      this.faults.lostAcks++
      throw new InjectedFault(`injected lost acknowledgement: put ${key} (the object was written)`)
    }
    return result
  }

  private damage(key: string, data: Buffer): Buffer {
    const o = this.options
    if (o.onlyKeys && !o.onlyKeys.test(key)) return data
    if (data.length > 0 && o.corruptReadRate && this.random() < o.corruptReadRate) {
      this.faults.corruptReads++
      const copy = Buffer.from(data)
      copy[Math.floor(this.random() * copy.length)] ^= 1 << Math.floor(this.random() * 8)
      return copy
    }
    if (data.length > 0 && o.truncateReadRate && this.random() < o.truncateReadRate) {
      this.faults.truncatedReads++
      return data.subarray(0, Math.floor(this.random() * data.length))
    }
    return data
  }
}

/** A small, fast, seedable PRNG (Tommy Ettinger's Mulberry32). */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}
