import path from 'node:path'
import { StoreConfigError } from './errors.js'
import { FileStore } from './file.js'
import { MemoryStore } from './memory.js'
import { S3Store, type S3StoreOptions } from './s3.js'
import type { ObjectStore } from './types.js'

export interface OpenStoreOptions {
  /** Explicit S3 credentials (flags); otherwise the AWS default chain. */
  s3Credentials?: { accessKeyId: string; secretAccessKey: string; sessionToken?: string }
  /** Whether the server honours conditional writes (recorded in the repository config). */
  conditionalWrites?: boolean
  /** Wraps the opened store (fault injection in tests, request accounting in the benchmark). */
  wrap?: (store: ObjectStore) => ObjectStore
}

const S3_PARAMS = new Set(['endpoint', 'region', 'path-style', 'checksums', 'max-sockets'])

/**
 * Opens a store from a repository URL:
 *   file:///abs/dir  (or a plain absolute path)
 *   s3://bucket[/prefix][?endpoint=URL&region=R&path-style=true|false&checksums=when-required|when-supported]
 *   memory://name    (tests)
 */
export function openStore(url: string, options: OpenStoreOptions = {}): ObjectStore {
  const store = openBackend(url, options)
  return options.wrap ? options.wrap(store) : store
}

function openBackend(url: string, options: OpenStoreOptions): ObjectStore {
  if (!url) throw new StoreConfigError('no repository given: use --repo URL or set S0FS_REPO')
  if (url.startsWith('/')) return new FileStore(path.resolve(url))
  const scheme = /^([a-z0-9+]+):\/\//.exec(url)?.[1]
  switch (scheme) {
    case 'file': {
      const dir = decodeURIComponent(url.slice('file://'.length))
      if (!dir.startsWith('/')) throw new StoreConfigError(`file repository needs an absolute path: file:///path (got ${url})`)
      return new FileStore(path.resolve(dir))
    }
    case 'memory': {
      const name = url.slice('memory://'.length)
      if (!name) throw new StoreConfigError('memory repository needs a name: memory://NAME')
      return new MemoryStore(name)
    }
    case 's3':
      return new S3Store({ ...parseS3Url(url), credentials: options.s3Credentials, conditionalWrites: options.conditionalWrites })
    default:
      throw new StoreConfigError(`unsupported repository URL ${JSON.stringify(url)}: expected file:///DIR, s3://BUCKET[/PREFIX] or memory://NAME`)
  }
}

export function parseS3Url(url: string): S3StoreOptions {
  let parsed: URL
  try {
    parsed = new URL(url)
  } catch {
    throw new StoreConfigError(`invalid s3 URL ${JSON.stringify(url)}: expected s3://BUCKET[/PREFIX][?endpoint=…]`)
  }
  const bucket = parsed.hostname
  if (!/^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$/.test(bucket)) {
    throw new StoreConfigError(`invalid bucket name ${JSON.stringify(bucket)} in ${url}`)
  }
  if (parsed.username || parsed.password) {
    throw new StoreConfigError('credentials do not belong in the repository URL: use AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or a profile')
  }
  for (const key of parsed.searchParams.keys()) {
    if (!S3_PARAMS.has(key)) throw new StoreConfigError(`unknown s3 URL parameter ${JSON.stringify(key)} (known: ${[...S3_PARAMS].join(', ')})`)
  }
  const endpoint = parsed.searchParams.get('endpoint') ?? process.env.AWS_ENDPOINT_URL_S3 ?? process.env.AWS_ENDPOINT_URL ?? undefined
  if (endpoint !== undefined && !/^https?:\/\/[^/]+/.test(endpoint)) {
    throw new StoreConfigError(`invalid endpoint ${JSON.stringify(endpoint)}: expected http(s)://host[:port]`)
  }
  const pathStyle = parsed.searchParams.get('path-style')
  if (pathStyle !== null && pathStyle !== 'true' && pathStyle !== 'false') {
    throw new StoreConfigError(`path-style must be true or false, got ${JSON.stringify(pathStyle)}`)
  }
  const checksums = parsed.searchParams.get('checksums')
  if (checksums !== null && checksums !== 'when-required' && checksums !== 'when-supported') {
    throw new StoreConfigError(`checksums must be when-required or when-supported, got ${JSON.stringify(checksums)}`)
  }
  const maxSockets = parsed.searchParams.get('max-sockets')
  return {
    bucket,
    prefix: decodeURIComponent(parsed.pathname).replace(/^\/+|\/+$/g, ''),
    endpoint,
    region: parsed.searchParams.get('region') ?? undefined,
    forcePathStyle: pathStyle === null ? undefined : pathStyle === 'true',
    checksums: (checksums as 'when-required' | 'when-supported' | null) ?? undefined,
    maxSockets: maxSockets ? Number(maxSockets) : undefined,
  }
}
