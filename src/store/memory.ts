import { NotFoundError, PreconditionFailedError } from './errors.js'
import { assertValidKey, newCounters, sliceRange } from './counters.js'
import type { Body, ListOptions, ListPage, ObjectInfo, ObjectStore, PutResult, StoreCapabilities } from './types.js'
import { joinBody } from './types.js'

interface Entry {
  data: Buffer
  etag: string
  modified: number
}

/**
 * In-process store for unit tests. Stores opened with the same `memory://name`
 * in one process share their objects, so a test can "reopen" a repository.
 */
export class MemoryStore implements ObjectStore {
  private static readonly namespaces = new Map<string, Map<string, Entry>>()
  private static version = 0

  readonly capabilities: StoreCapabilities = { atomicConditionalWrites: true }
  readonly counters = newCounters()
  private readonly objects: Map<string, Entry>

  constructor(readonly name: string) {
    let objects = MemoryStore.namespaces.get(name)
    if (!objects) {
      objects = new Map()
      MemoryStore.namespaces.set(name, objects)
    }
    this.objects = objects
  }

  get displayUrl(): string {
    return `memory://${this.name}`
  }

  /** Drops a namespace so the next open starts empty. */
  static reset(name: string): void {
    MemoryStore.namespaces.delete(name)
  }

  async get(key: string, range?: { start: number; end?: number }): Promise<Buffer> {
    assertValidKey(key)
    this.counters.get++
    const entry = this.objects.get(key)
    if (!entry) throw new NotFoundError(key)
    const out = Buffer.from(sliceRange(entry.data, range))
    this.counters.bytesIn += out.length
    return out
  }

  async getVersioned(key: string): Promise<{ data: Buffer; etag: string }> {
    assertValidKey(key)
    this.counters.get++
    const entry = this.objects.get(key)
    if (!entry) throw new NotFoundError(key)
    this.counters.bytesIn += entry.data.length
    return { data: Buffer.from(entry.data), etag: entry.etag }
  }

  async put(key: string, data: Body): Promise<PutResult> {
    assertValidKey(key)
    return this.store(key, joinBody(data))
  }

  async putIfAbsent(key: string, data: Buffer): Promise<PutResult> {
    assertValidKey(key)
    if (this.objects.has(key)) {
      this.counters.put++
      throw new PreconditionFailedError(key, 'object already exists')
    }
    return this.store(key, data)
  }

  async putIfMatch(key: string, data: Buffer, etag: string): Promise<PutResult> {
    assertValidKey(key)
    const current = this.objects.get(key)
    if (!current || current.etag !== etag) {
      this.counters.put++
      throw new PreconditionFailedError(key, 'object changed')
    }
    return this.store(key, data)
  }

  async head(key: string): Promise<ObjectInfo | undefined> {
    assertValidKey(key)
    this.counters.head++
    const entry = this.objects.get(key)
    return entry ? { key, size: entry.data.length, etag: entry.etag } : undefined
  }

  async listPage(prefix: string, options: ListOptions = {}): Promise<ListPage> {
    this.counters.list++
    const limit = options.limit ?? 1000
    const keys = [...this.objects.keys()]
      .filter((k) => k.startsWith(prefix) && (options.startAfter === undefined || k > options.startAfter))
      .sort()
    const page = keys.slice(0, limit)
    const objects = page.map((key) => {
      const entry = this.objects.get(key)!
      return { key, size: entry.data.length, etag: entry.etag, modified: entry.modified }
    })
    return { objects, next: keys.length > limit ? page[page.length - 1] : undefined }
  }

  async deleteMany(keys: string[]): Promise<void> {
    for (const key of keys) {
      assertValidKey(key)
      this.counters.delete++
      this.objects.delete(key)
    }
  }

  async close(): Promise<void> {}

  private store(key: string, data: Buffer): PutResult {
    this.counters.put++
    this.counters.bytesOut += data.length
    const etag = `m${++MemoryStore.version}`
    this.objects.set(key, { data: Buffer.from(data), etag, modified: Date.now() })
    return { etag }
  }
}
