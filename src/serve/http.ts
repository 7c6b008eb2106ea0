import type { IncomingMessage, ServerResponse } from 'node:http'
import { BlobReadError } from '../blob/index.js'
import { ERRNO_TEXT, FsError } from '../fs/index.js'
import { InvalidNameError, LeaseHeldError, PageCorruptError, RefExistsError, RefNotFoundError } from '../meta/index.js'
import { StoreUnavailableError } from '../store/index.js'

/** HTTP plumbing of `s0fs serve`: errors as JSON with the right status, bounded bodies, byte ranges. */

export class HttpError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    /** Headers the reply must carry (Allow on a 405, Content-Range on a 416). */
    readonly headers: Record<string, string> = {},
  ) {
    super(message)
    this.name = 'HttpError'
  }
}

const FS_STATUS: Partial<Record<string, number>> = {
  ENOENT: 404,
  EEXIST: 409,
  ENOTEMPTY: 409,
  EBUSY: 409,
  EACCES: 403,
  EPERM: 403,
  EROFS: 403,
  EINVAL: 400,
  ENAMETOOLONG: 400,
  ELOOP: 400,
  ENOTDIR: 400,
  EISDIR: 400,
  EXDEV: 400,
  EFBIG: 413,
  ENOSPC: 507,
  EIO: 500,
}

/** An error's HTTP status and JSON body: { error: { code, message } }. */
export function errorResponse(err: unknown): { status: number; body: { error: { code: string; message: string } } } {
  const as = (status: number, code: string, message: string) => ({ status, body: { error: { code, message } } })
  if (err instanceof HttpError) return as(err.status, err.code, err.message)
  if (err instanceof FsError) return as(FS_STATUS[err.code] ?? 500, err.code, `${err.detail ? `${err.detail}: ` : ''}${ERRNO_TEXT[err.code]}`)
  if (err instanceof RefNotFoundError) return as(404, 'not_found', err.message)
  if (err instanceof RefExistsError) return as(409, 'exists', err.message)
  if (err instanceof InvalidNameError) return as(400, 'invalid_name', err.message)
  if (err instanceof LeaseHeldError) return as(423, 'locked', err.message)
  if (err instanceof BlobReadError || err instanceof PageCorruptError) {
    if (err.cause instanceof StoreUnavailableError) return as(503, 'unavailable', err.message)
    return as(500, 'damaged', err.message)
  }
  if (err instanceof StoreUnavailableError) return as(503, 'unavailable', err.message)
  const code = (err as { code?: string }).code
  if (code && code in ERRNO_TEXT) return as(FS_STATUS[code] ?? 500, code, (err as Error).message)
  return as(500, 'internal', (err as Error).message)
}

export function sendJson(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body, null, 2) + '\n'
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(text) })
  res.end(text)
}

/** Reads a JSON request body of at most `limit` bytes. */
export async function readJson(req: IncomingMessage, limit = 1024 * 1024): Promise<Record<string, unknown>> {
  const parts: Buffer[] = []
  for await (const chunk of limitBody(req, limit)) parts.push(chunk)
  if (parts.length === 0) return {}
  let value: unknown
  try {
    value = JSON.parse(Buffer.concat(parts).toString('utf8'))
  } catch (err) {
    throw new HttpError(400, 'bad_json', `the request body is not JSON: ${(err as Error).message}`)
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new HttpError(400, 'bad_json', 'the request body must be a JSON object')
  return value as Record<string, unknown>
}

/** 413 for a body whose Content-Length is over `limit`: callers check it before they change anything. */
export function refuseDeclaredTooLarge(req: IncomingMessage, limit: number): void {
  const declared = Number(req.headers['content-length'] ?? NaN)
  if (declared > limit) throw new HttpError(413, 'too_large', `the request body is ${declared} bytes; the limit is ${limit}`)
}

/** The request body, failing with 413 past `limit` bytes (whatever Content-Length claimed). */
export async function* limitBody(req: IncomingMessage, limit: number): AsyncIterable<Buffer> {
  refuseDeclaredTooLarge(req, limit)
  let seen = 0
  for await (const chunk of req as AsyncIterable<Buffer>) {
    seen += chunk.length
    if (seen > limit) throw new HttpError(413, 'too_large', `the request body exceeds the limit of ${limit} bytes`)
    yield chunk
  }
}

/**
 * One byte range from a Range header (RFC 9110), or undefined for the whole
 * file. What this server does not serve is ignored, as RFC 9110 allows: other
 * units, several ranges, and a Range whose If-Range validator (a date) does
 * not match the file's Last-Modified.
 */
export function parseRange(header: string | undefined, size: number, ifRange?: string, lastModified?: string): { start: number; end: number } | undefined {
  if (!header || !/^bytes=/i.test(header.trim()) || header.includes(',')) return undefined
  if (ifRange !== undefined && ifRange !== lastModified) return undefined
  const unsatisfiable = (why: string) => new HttpError(416, 'bad_range', why, { 'content-range': `bytes */${size}` })
  const m = /^bytes=(\d*)-(\d*)$/i.exec(header.trim())
  if (!m || (m[1] === '' && m[2] === '')) throw unsatisfiable(`malformed Range ${JSON.stringify(header)}: bytes=START-END, START- or -LENGTH`)
  let start: number
  let end: number
  if (m[1] === '') {
    start = Math.max(0, size - Number(m[2]))
    end = size - 1
  } else {
    start = Number(m[1])
    end = m[2] === '' ? size - 1 : Math.min(Number(m[2]), size - 1)
  }
  if (start >= size || start > end) throw unsatisfiable(`range ${header} is outside the file (${size} bytes)`)
  return { start, end }
}

/** A required string field of a JSON body. */
export function field(body: Record<string, unknown>, name: string): string {
  const v = body[name]
  if (typeof v !== 'string' || v === '') throw new HttpError(400, 'bad_request', `the body needs a string "${name}"`)
  return v
}

export function octal(text: string | null, what: string): number | undefined {
  if (text === null) return undefined
  if (!/^[0-7]{1,4}$/.test(text)) throw new HttpError(400, 'bad_request', `${what} must be octal permission bits such as 644`)
  return parseInt(text, 8)
}
