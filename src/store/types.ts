/**
 * The object-store contract every backend implements. Keys are relative to the
 * repository root ("config", "seg/ab/…", "refs/…"); a backend maps them onto
 * files, S3 keys under a prefix, or a Map.
 */

/** An inclusive-exclusive byte range; `end` omitted means "to the end of the object". */
export interface ByteRange {
  start: number
  end?: number
}

export interface ObjectInfo {
  key: string
  size: number
  /** Opaque version tag; changes whenever the object is replaced. */
  etag: string
  /** Last write, ms since the epoch (listings; GC's grace period is measured against it). */
  modified?: number
}

export interface PutResult {
  etag: string
}

export interface ListPage {
  objects: ObjectInfo[]
  /** Pass as `startAfter` to fetch the next page; undefined when this was the last page. */
  next?: string
}

export interface ListOptions {
  /** Only keys strictly greater than this one. */
  startAfter?: string
  /** Page size; backends may return fewer. */
  limit?: number
}

export interface StoreCapabilities {
  /**
   * True when put-if-absent and put-if-match are atomic on the server side (two
   * racing writers: exactly one wins). False when the backend can only check and
   * then write, which leaves a race window; s0fs then relies on the volume lease
   * to keep a single writer.
   */
  atomicConditionalWrites: boolean
}

/** What a backend counts; the benchmark and `s0fs stats` read these. */
export interface StoreCounters {
  get: number
  put: number
  head: number
  list: number
  delete: number
  bytesIn: number
  bytesOut: number
  retries: number
  errors: number
}

/**
 * An object's bytes for `put`: one buffer, or parts written back to back. A
 * segment is a few hundred sealed blobs; handing them over as parts spares
 * joining several MiB into a fresh buffer for every segment (a file store writes
 * them with writev).
 */
export type Body = Buffer | readonly Buffer[]

export function bodyLength(body: Body): number {
  return Buffer.isBuffer(body) ? body.length : body.reduce((n, part) => n + part.length, 0)
}

/** The body as one buffer (joined only when it is in parts). */
export function joinBody(body: Body): Buffer {
  return Buffer.isBuffer(body) ? body : Buffer.concat(body)
}

export interface ObjectStore {
  /** The repository URL with any secrets removed; safe to print. */
  readonly displayUrl: string
  readonly capabilities: StoreCapabilities
  readonly counters: StoreCounters

  /** Whole object, or the given range. Throws NotFoundError when absent. */
  get(key: string, range?: ByteRange): Promise<Buffer>
  /** Object with its version tag, for read-modify-write. Throws NotFoundError when absent. */
  getVersioned(key: string): Promise<{ data: Buffer; etag: string }>
  /**
   * Unconditional write (create or replace). The store keeps no reference to
   * `data` once the promise settles: the caller may free or reuse its memory
   * (the blob store frees a segment's buffers then, src/blob/arenas.ts).
   */
  put(key: string, data: Body): Promise<PutResult>
  /** Create only if absent; throws PreconditionFailedError when the key exists. */
  putIfAbsent(key: string, data: Buffer): Promise<PutResult>
  /**
   * Compare-and-swap: replace only if the current version tag equals `etag`;
   * throws PreconditionFailedError otherwise (including when the key is absent).
   */
  putIfMatch(key: string, data: Buffer, etag: string): Promise<PutResult>
  /** Size and version tag, or undefined when absent. */
  head(key: string): Promise<ObjectInfo | undefined>
  /** One page of keys with the prefix, in ascending byte order. */
  listPage(prefix: string, options?: ListOptions): Promise<ListPage>
  /** Deletes the keys; absent keys are not an error. */
  deleteMany(keys: string[]): Promise<void>
  /** Releases sockets, file handles, timers. */
  close(): Promise<void>
}
