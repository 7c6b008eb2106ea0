import type {
  CompleteMultipartUploadCommandOutput,
  CreateMultipartUploadCommandOutput,
  DeleteObjectsCommandOutput,
  GetObjectCommandOutput,
  HeadObjectCommandOutput,
  ListObjectsV2CommandOutput,
  PutObjectCommandOutput,
  S3Client as S3ClientType,
  S3ClientConfig,
  UploadPartCommandOutput,
} from '@aws-sdk/client-s3'
import { Agent as HttpAgent } from 'node:http'
import { Agent as HttpsAgent } from 'node:https'
import { NotFoundError, PreconditionFailedError, StoreAuthError, StoreConfigError, StoreError, StoreUnavailableError } from './errors.js'
import { assertValidKey, newCounters } from './counters.js'
import { backoffDelay, DEFAULT_RETRY, sleep, type RetryPolicy } from './retry.js'
import type { Body, ListOptions, ListPage, ObjectInfo, ObjectStore, PutResult, StoreCapabilities } from './types.js'
import { joinBody } from './types.js'
import { freeBuffer } from '../util/native.js'

type S3Module = typeof import('@aws-sdk/client-s3')

export interface S3StoreOptions {
  bucket: string
  /** Key prefix inside the bucket, without leading or trailing slash ("" for the bucket root). */
  prefix: string
  /** Custom endpoint (MinIO, Ceph, R2 …); AWS when omitted. */
  endpoint?: string
  region?: string
  /** Path-style addressing (bucket in the path); the default with a custom endpoint. */
  forcePathStyle?: boolean
  /** Explicit credentials; otherwise the standard AWS chain (env, profile, SSO, IMDS …). */
  credentials?: { accessKeyId: string; secretAccessKey: string; sessionToken?: string }
  /**
   * 'when-required' (default) sends and checks flexible checksums only where S3
   * requires them, which works with every S3-compatible server; 'when-supported'
   * is the AWS SDK default and adds CRC32 trailers that some servers store verbatim.
   */
  checksums?: 'when-required' | 'when-supported'
  /** Whether put-if-absent / put-if-match are honoured by the server, as probed at init. */
  conditionalWrites?: boolean
  retry?: RetryPolicy
  /** Objects above this size are uploaded in parts. */
  multipartThreshold?: number
  partSize?: number
  maxSockets?: number
}

const DEFAULT_MULTIPART_THRESHOLD = 32 * 1024 * 1024
const DEFAULT_PART_SIZE = 8 * 1024 * 1024
const PART_CONCURRENCY = 4

/** The outcome of one attempt, classified for the retry loop. */
type Failure =
  | { kind: 'retry'; error: unknown; ambiguous: boolean }
  | { kind: 'fatal'; error: Error }

/**
 * `s3://bucket/prefix` through @aws-sdk/client-s3.
 *
 * The SDK's own retries are off (maxAttempts 1): this class retries itself so it
 * can count retries, classify errors once, and resolve an ambiguous conditional
 * write — a PUT whose response was lost may have succeeded, so a later 412 is
 * checked against the object's content before it is reported as a lost race.
 */
export class S3Store implements ObjectStore {
  readonly counters = newCounters()
  readonly capabilities: StoreCapabilities
  private readonly retry: RetryPolicy
  private readonly keyPrefix: string
  private clientPromise?: Promise<{ s3: S3Module; client: S3ClientType }>

  constructor(readonly options: S3StoreOptions) {
    if (!options.bucket) throw new StoreConfigError('s3 repository URL needs a bucket: s3://BUCKET[/PREFIX]')
    this.retry = options.retry ?? DEFAULT_RETRY
    this.keyPrefix = options.prefix ? options.prefix.replace(/^\/+|\/+$/g, '') + '/' : ''
    this.capabilities = { atomicConditionalWrites: options.conditionalWrites ?? true }
  }

  get displayUrl(): string {
    const base = `s3://${this.options.bucket}/${this.keyPrefix.replace(/\/$/, '')}`
    return this.options.endpoint ? `${base} (endpoint ${this.options.endpoint})` : base
  }

  /** Sets whether the server honours conditional writes (from the repository config, probed at init). */
  setConditionalWrites(supported: boolean): void {
    this.capabilities.atomicConditionalWrites = supported
  }

  async get(key: string, range?: { start: number; end?: number }): Promise<Buffer> {
    const { data } = await this.getObject(key, range)
    return data
  }

  async getVersioned(key: string): Promise<{ data: Buffer; etag: string }> {
    return this.getObject(key)
  }

  async put(key: string, body: Body): Promise<PutResult> {
    const data = joinBody(body)
    const result = data.length > (this.options.multipartThreshold ?? DEFAULT_MULTIPART_THRESHOLD) ? await this.putMultipart(key, data) : await this.putObject(key, data, {})
    // A segment's parts were joined into a copy of our own (a few MiB): free it now rather than at V8's next collection.
    if (data !== body) freeBuffer(data)
    return result
  }

  async putIfAbsent(key: string, data: Buffer): Promise<PutResult> {
    if (!this.capabilities.atomicConditionalWrites) {
      // The server ignores If-None-Match: check, then write. Not atomic; the lease fences writers.
      if (await this.head(key)) throw new PreconditionFailedError(key, 'object already exists')
      return this.putObject(key, data, {})
    }
    return this.putObject(key, data, { IfNoneMatch: '*' })
  }

  async putIfMatch(key: string, data: Buffer, etag: string): Promise<PutResult> {
    if (!this.capabilities.atomicConditionalWrites) {
      const current = await this.head(key)
      if (!current || current.etag !== etag) throw new PreconditionFailedError(key, current ? 'object changed' : 'object does not exist')
      return this.putObject(key, data, {})
    }
    // Ceph RGW only matches the bare ETag; AWS and MinIO accept it too.
    return this.putObject(key, data, { IfMatch: etag.replace(/^"|"$/g, '') })
  }

  async head(key: string): Promise<ObjectInfo | undefined> {
    assertValidKey(key)
    const { s3 } = await this.client()
    try {
      const out = await this.send<HeadObjectCommandOutput>('head', key, () => new s3.HeadObjectCommand({ Bucket: this.options.bucket, Key: this.keyPrefix + key }))
      return { key, size: Number(out.ContentLength ?? 0), etag: bareEtag(out.ETag) }
    } catch (err) {
      if (err instanceof NotFoundError) return undefined
      throw err
    }
  }

  async listPage(prefix: string, options: ListOptions = {}): Promise<ListPage> {
    const { s3 } = await this.client()
    const limit = Math.min(options.limit ?? 1000, 1000)
    const out = await this.send<ListObjectsV2CommandOutput>('list', prefix, () =>
      new s3.ListObjectsV2Command({
        Bucket: this.options.bucket,
        Prefix: this.keyPrefix + prefix,
        StartAfter: options.startAfter !== undefined ? this.keyPrefix + options.startAfter : undefined,
        MaxKeys: limit,
      }),
    )
    const objects = (out.Contents ?? []).map((o) => ({
      key: o.Key!.slice(this.keyPrefix.length),
      size: Number(o.Size ?? 0),
      etag: bareEtag(o.ETag),
      modified: o.LastModified?.getTime(),
    }))
    return { objects, next: out.IsTruncated && objects.length > 0 ? objects[objects.length - 1].key : undefined }
  }

  async deleteMany(keys: string[]): Promise<void> {
    const { s3 } = await this.client()
    for (let i = 0; i < keys.length; i += 1000) {
      const batch = keys.slice(i, i + 1000)
      batch.forEach(assertValidKey)
      const out = await this.send<DeleteObjectsCommandOutput>('delete', batch[0] ?? '', () =>
        new s3.DeleteObjectsCommand({
          Bucket: this.options.bucket,
          Delete: { Objects: batch.map((k) => ({ Key: this.keyPrefix + k })), Quiet: true },
        }),
      )
      this.counters.delete += batch.length - 1 // send() counted one
      const failed = (out.Errors ?? []).filter((e) => e.Code !== 'NoSuchKey')
      if (failed.length > 0) {
        throw new StoreError(`delete failed for ${failed.length} object(s), first ${failed[0].Key}: ${failed[0].Code} ${failed[0].Message ?? ''}`)
      }
    }
  }

  async close(): Promise<void> {
    if (this.clientPromise) (await this.clientPromise).client.destroy()
    this.clientPromise = undefined
  }

  // --- internals -----------------------------------------------------------

  private client(): Promise<{ s3: S3Module; client: S3ClientType }> {
    this.clientPromise ??= (async () => {
      // Loaded on first use: the SDK costs ~150 ms of start-up that file:// users should not pay.
      // Its Node-version advisory would print on every CLI call; s0fs states its own support range.
      process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true'
      const s3 = await import('@aws-sdk/client-s3')
      const { NodeHttpHandler } = await import('@smithy/node-http-handler')
      const maxSockets = this.options.maxSockets ?? 32
      const checksums = this.options.checksums === 'when-supported' ? 'WHEN_SUPPORTED' : 'WHEN_REQUIRED'
      const config: S3ClientConfig = {
        region: this.options.region ?? process.env.AWS_REGION ?? process.env.AWS_DEFAULT_REGION ?? 'us-east-1',
        endpoint: this.options.endpoint,
        forcePathStyle: this.options.forcePathStyle ?? this.options.endpoint !== undefined,
        credentials: this.options.credentials,
        maxAttempts: 1,
        requestChecksumCalculation: checksums,
        responseChecksumValidation: checksums,
        requestHandler: new NodeHttpHandler({
          connectionTimeout: 5_000,
          requestTimeout: 120_000,
          httpAgent: new HttpAgent({ keepAlive: true, maxSockets }),
          httpsAgent: new HttpsAgent({ keepAlive: true, maxSockets }),
        }),
      }
      return { s3, client: new s3.S3Client(config) }
    })()
    return this.clientPromise
  }

  private async getObject(key: string, range?: { start: number; end?: number }): Promise<{ data: Buffer; etag: string }> {
    assertValidKey(key)
    const { s3 } = await this.client()
    if (range) {
      if (range.start < 0 || (range.end !== undefined && range.end < range.start)) {
        throw new RangeError(`invalid range ${range.start}-${range.end} of ${key}`)
      }
      if (range.end !== undefined && range.end === range.start) return { data: Buffer.alloc(0), etag: '' }
    }
    const rangeHeader = range ? `bytes=${range.start}-${range.end === undefined ? '' : range.end - 1}` : undefined
    try {
      return await this.send<GetObjectCommandOutput, { data: Buffer; etag: string }>('get', key, async () => new s3.GetObjectCommand({ Bucket: this.options.bucket, Key: this.keyPrefix + key, Range: rangeHeader }), async (out) => {
        const bytes = await out.Body!.transformToByteArray()
        const data = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)
        const expected = range ? undefined : out.ContentLength
        if (expected !== undefined && data.length !== expected) {
          throw Object.assign(new Error(`short read of ${key}: ${data.length} of ${expected} bytes`), { retryable: true })
        }
        this.counters.bytesIn += data.length
        return { data, etag: bareEtag(out.ETag) }
      })
    } catch (err) {
      // A range starting at the end of the object: S3 answers 416, we answer "no bytes".
      if (range && isHttpStatus(err, 416)) return { data: Buffer.alloc(0), etag: '' }
      throw err
    }
  }

  private async putObject(key: string, data: Buffer, conditions: { IfNoneMatch?: string; IfMatch?: string }): Promise<PutResult> {
    assertValidKey(key)
    const { s3 } = await this.client()
    const conditional = conditions.IfMatch !== undefined || conditions.IfNoneMatch !== undefined
    let ambiguous = false
    try {
      const out = await this.send<PutObjectCommandOutput>(
        'put',
        key,
        () => new s3.PutObjectCommand({ Bucket: this.options.bucket, Key: this.keyPrefix + key, Body: data, ContentLength: data.length, ...conditions }),
        undefined,
        () => (ambiguous = true),
      )
      this.counters.bytesOut += data.length
      return { etag: bareEtag(out.ETag) }
    } catch (err) {
      if (conditional && ambiguous && err instanceof PreconditionFailedError) {
        // An earlier attempt may have landed and this 412 may be our own write.
        const current = await this.getObject(key).catch(() => undefined)
        if (current && current.data.equals(data)) return { etag: current.etag }
      }
      throw err
    }
  }

  private async putMultipart(key: string, data: Buffer): Promise<PutResult> {
    assertValidKey(key)
    const { s3 } = await this.client()
    const Bucket = this.options.bucket
    const Key = this.keyPrefix + key
    const partSize = this.options.partSize ?? DEFAULT_PART_SIZE
    const created = await this.send<CreateMultipartUploadCommandOutput>('put', key, () => new s3.CreateMultipartUploadCommand({ Bucket, Key }))
    const UploadId = created.UploadId!
    try {
      const parts: { ETag: string; PartNumber: number }[] = []
      const count = Math.ceil(data.length / partSize)
      let nextPart = 0
      const worker = async () => {
        while (nextPart < count) {
          const index = nextPart++
          const body = data.subarray(index * partSize, Math.min(data.length, (index + 1) * partSize))
          const out = await this.send<UploadPartCommandOutput>('put', key, () =>
            new s3.UploadPartCommand({ Bucket, Key, UploadId, PartNumber: index + 1, Body: body, ContentLength: body.length }),
          )
          parts[index] = { ETag: out.ETag!, PartNumber: index + 1 }
        }
      }
      await Promise.all(Array.from({ length: Math.min(PART_CONCURRENCY, count) }, worker))
      const done = await this.send<CompleteMultipartUploadCommandOutput>('put', key, () =>
        new s3.CompleteMultipartUploadCommand({ Bucket, Key, UploadId, MultipartUpload: { Parts: parts } }),
      )
      this.counters.bytesOut += data.length
      return { etag: bareEtag(done.ETag) }
    } catch (err) {
      await this.send('delete', key, () => new s3.AbortMultipartUploadCommand({ Bucket, Key, UploadId })).catch(() => undefined)
      throw err
    }
  }

  /**
   * Sends one command with retries. `read` consumes the response inside the
   * retry loop (a body cut short is retried like a failed request).
   */
  private async send<T, R = T>(
    op: 'get' | 'put' | 'head' | 'list' | 'delete',
    key: string,
    make: () => object | Promise<object>,
    read?: (out: T) => Promise<R>,
    onAmbiguous?: () => void,
  ): Promise<R> {
    const { client } = await this.client()
    for (let attempt = 0; ; attempt++) {
      this.counters[op]++
      try {
        const out = (await client.send((await make()) as never)) as T
        return read ? await read(out) : (out as unknown as R)
      } catch (err) {
        const failure = this.classify(err, key)
        if (failure.kind === 'fatal') throw failure.error
        if (failure.ambiguous) onAmbiguous?.()
        this.counters.errors++
        if (attempt + 1 >= this.retry.maxAttempts) {
          throw new StoreUnavailableError(
            `${this.displayUrl}: ${op} ${key} failed after ${attempt + 1} attempts: ${describe(failure.error)}`,
            { cause: failure.error },
          )
        }
        this.counters.retries++
        await sleep(backoffDelay(this.retry, attempt))
      }
    }
  }

  private classify(err: unknown, key: string): Failure {
    const e = err as { name?: string; code?: string; message?: string; retryable?: boolean; $metadata?: { httpStatusCode?: number } }
    const status = e.$metadata?.httpStatusCode
    const name = e.name ?? ''
    if (e.retryable) return { kind: 'retry', error: err, ambiguous: false }
    if (name === 'NoSuchKey' || name === 'NotFound' || status === 404) {
      if (name === 'NoSuchBucket') {
        return { kind: 'fatal', error: new StoreConfigError(`bucket ${this.options.bucket} does not exist at ${this.options.endpoint ?? 'AWS S3'}`) }
      }
      return { kind: 'fatal', error: new NotFoundError(key) }
    }
    if (name === 'PreconditionFailed' || status === 412) return { kind: 'fatal', error: new PreconditionFailedError(key) }
    if (status === 416 || name === 'InvalidRange') return { kind: 'fatal', error: err as Error }
    if (name === 'CredentialsProviderError') {
      return {
        kind: 'fatal',
        error: new StoreAuthError(`${this.displayUrl}: no S3 credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE`),
      }
    }
    if (['InvalidAccessKeyId', 'SignatureDoesNotMatch', 'AccessDenied', 'ExpiredToken', 'InvalidToken'].includes(name) || status === 403 || status === 401) {
      return { kind: 'fatal', error: new StoreAuthError(`${this.displayUrl}: access denied (${name || status}): check the access key and secret`) }
    }
    // Conflicting concurrent conditional writes (AWS 409, Ceph 500 "operation cancelled"):
    // nothing was written, and a retry resolves the race with a clean 412.
    if (status === 409) return { kind: 'retry', error: err, ambiguous: false }
    if (status !== undefined && (status >= 500 || status === 429 || name === 'SlowDown' || name === 'RequestTimeout')) {
      return { kind: 'retry', error: err, ambiguous: true }
    }
    const code = e.code ?? name
    if (
      ['ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH', 'ENETUNREACH'].includes(code) ||
      name === 'TimeoutError' && /connect/i.test(e.message ?? '')
    ) {
      return { kind: 'retry', error: err, ambiguous: false }
    }
    if (['ECONNRESET', 'EPIPE', 'ETIMEDOUT', 'ECONNABORTED', 'TimeoutError', 'RequestTimeout', 'AbortError'].includes(code) || /socket hang up/i.test(e.message ?? '')) {
      return { kind: 'retry', error: err, ambiguous: true }
    }
    if (status !== undefined && status >= 400) {
      return { kind: 'fatal', error: new StoreError(`${this.displayUrl}: ${name || 'HTTP ' + status} on ${key}: ${e.message ?? ''}`, { cause: err }) }
    }
    if (err instanceof StoreError) return { kind: 'fatal', error: err }
    // Unknown transport trouble: retry, but treat as possibly applied.
    return { kind: 'retry', error: err, ambiguous: true }
  }
}

function bareEtag(etag: string | undefined): string {
  return (etag ?? '').replace(/^"|"$/g, '')
}

function isHttpStatus(err: unknown, status: number): boolean {
  return (err as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode === status
}

function describe(err: unknown): string {
  const e = err as { name?: string; code?: string; message?: string; $metadata?: { httpStatusCode?: number } }
  const parts = [e.code ?? e.name, e.$metadata?.httpStatusCode ? `HTTP ${e.$metadata.httpStatusCode}` : undefined, e.message]
  return parts.filter(Boolean).join(' ')
}
