import { Compressor, Decompressor } from 'zstd-napi'
import type { RepoKeys } from '../crypto/index.js'

/**
 * One blob as stored: sealed(flags | payload) with associated data naming the
 * blob's content ID, so a blob moved to another ID's place fails to open.
 * The payload is zstd-compressed when that saves at least 3%, else raw.
 */

export const BLOB_ID_BYTES = 32
const FLAG_RAW = 0
const FLAG_ZSTD = 1
const ZSTD_LEVEL = 1
/** Below this, compression is not worth a frame header. */
const MIN_COMPRESS = 64
/** Keep compressed output only if it is at most this fraction of the input. */
const MAX_RATIO = 0.97

export interface EncodedBlob {
  id: Buffer
  sealed: Buffer
  rawLength: number
}

export class BlobCorruptError extends Error {
  constructor(message: string) {
    super(message)
    this.name = 'BlobCorruptError'
  }
}

let compressor: Compressor | undefined
let decompressor: Decompressor | undefined

export function blobAad(id: Buffer): string {
  return `blob:${id.toString('hex')}`
}

export function encodeBlob(keys: RepoKeys, data: Buffer): EncodedBlob {
  const id = keys.contentId(data)
  let flag = FLAG_RAW
  let payload = data
  if (data.length >= MIN_COMPRESS) {
    if (!compressor) {
      compressor = new Compressor()
      compressor.setParameters({ compressionLevel: ZSTD_LEVEL })
    }
    const packed = compressor.compress(data)
    if (packed.length <= data.length * MAX_RATIO) {
      flag = FLAG_ZSTD
      payload = packed
    }
  }
  const sealed = keys.seal('data', [Buffer.of(flag), payload], blobAad(id))
  return { id, sealed, rawLength: data.length }
}

const ZEROS = Buffer.alloc(64 * 1024)

/** True when every byte is zero (such chunks are holes, never stored). */
export function isAllZero(data: Uint8Array): boolean {
  const buf = Buffer.from(data.buffer, data.byteOffset, data.byteLength)
  for (let at = 0; at < buf.length; at += ZEROS.length) {
    const part = buf.subarray(at, at + ZEROS.length)
    if (!part.equals(ZEROS.subarray(0, part.length))) return false
  }
  return true
}

export function decodeBlob(keys: RepoKeys, id: Buffer, sealed: Buffer, rawLength?: number): Buffer {
  const body = keys.open('data', sealed, blobAad(id), `blob ${id.toString('hex').slice(0, 16)}`)
  const flag = body[0]
  const payload = body.subarray(1)
  let data: Buffer
  if (flag === FLAG_RAW) data = payload
  else if (flag === FLAG_ZSTD) {
    decompressor ??= new Decompressor()
    try {
      data = decompressor.decompress(payload)
    } catch (err) {
      throw new BlobCorruptError(`blob ${id.toString('hex').slice(0, 16)}: zstd payload does not decompress: ${(err as Error).message}`)
    }
  } else throw new BlobCorruptError(`blob ${id.toString('hex').slice(0, 16)}: unknown encoding ${flag}`)
  if (rawLength !== undefined && data.length !== rawLength) {
    throw new BlobCorruptError(`blob ${id.toString('hex').slice(0, 16)}: ${data.length} bytes, expected ${rawLength}`)
  }
  return data
}
