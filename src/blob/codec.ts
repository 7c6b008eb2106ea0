import { Compressor, Decompressor } from 'zstd-napi'
// The low-level binding decompresses into a buffer the caller provides; it is CommonJS without static export names.
import zstdBinding from 'zstd-napi/binding.js'
import type { RepoKeys } from '../crypto/index.js'

/**
 * One blob as stored: sealed(flags | payload) with associated data naming the
 * blob's content ID, so a blob moved to another ID's place fails to open.
 * The payload is zstd-compressed when that saves at least 3%, else raw.
 *
 * Compressed, a blob larger than FRAME_BYTES is a run of independent zstd
 * frames (repository format 2): a small read at a random offset of a chunk
 * then decompresses one 128 KiB frame instead of the whole chunk (up to 4
 * MiB; 1.5 ms each for fio's compressible data), and the cache can hold the
 * opened, still-compressed blob. Encryption still covers the whole blob.
 *
 *   FLAG_ZSTD_FRAMES payload: rawLength u32 | frameBytes u32 | compressed size u32 × frames | frames…
 */

export const BLOB_ID_BYTES = 32
const FLAG_RAW = 0
const FLAG_ZSTD = 1
const FLAG_ZSTD_FRAMES = 2
/** Raw bytes per frame of a framed blob. */
export const FRAME_BYTES = 128 * 1024
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
/** For frames decompressed straight into a caller's buffer (the high-level Decompressor always allocates). */
let intoContext: zstdBinding.DCtx | undefined
/** FramedBlob.scratchFrame's buffer: frames are FRAME_BYTES (larger ones, only in a damaged header, get a buffer of their own). */
const FRAME_SCRATCH = Buffer.allocUnsafeSlow(FRAME_BYTES)

export function blobAad(id: Buffer): string {
  return `blob:${id.toString('hex')}`
}

export interface EncodeOptions {
  /** Compress blobs larger than FRAME_BYTES as independent frames (repository format 2 and later). */
  frames?: boolean
}

export function encodeBlob(keys: RepoKeys, data: Buffer, options: EncodeOptions = {}): EncodedBlob {
  const id = keys.contentId(data)
  let flag = FLAG_RAW
  let payload = [data]
  if (data.length >= MIN_COMPRESS) {
    if (!compressor) {
      compressor = new Compressor()
      compressor.setParameters({ compressionLevel: ZSTD_LEVEL })
    }
    const framed = options.frames === true && data.length > FRAME_BYTES
    const packed = framed ? compressFrames(compressor, data) : [compressor.compress(data)]
    if (packed.reduce((n, p) => n + p.length, 0) <= data.length * MAX_RATIO) {
      flag = framed ? FLAG_ZSTD_FRAMES : FLAG_ZSTD
      payload = packed
    }
  }
  const sealed = keys.seal('data', [Buffer.of(flag), ...payload], blobAad(id))
  return { id, sealed, rawLength: data.length }
}

/** The FLAG_ZSTD_FRAMES payload of `data`, in parts: its header, then each frame. */
function compressFrames(compressor: Compressor, data: Buffer): Buffer[] {
  const count = Math.ceil(data.length / FRAME_BYTES)
  const header = Buffer.allocUnsafe(8 + 4 * count)
  header.writeUInt32LE(data.length, 0)
  header.writeUInt32LE(FRAME_BYTES, 4)
  const frames: Buffer[] = []
  for (let i = 0; i < count; i++) {
    const frame = compressor.compress(data.subarray(i * FRAME_BYTES, (i + 1) * FRAME_BYTES))
    header.writeUInt32LE(frame.length, 8 + 4 * i)
    frames.push(frame)
  }
  return [header, ...frames]
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

/** A blob decrypted and checked, whose bytes can be taken whole or in part (a framed blob decompresses only the frames asked for). */
export interface OpenedBlob {
  readonly rawLength: number
  /** Memory the opened blob holds (for cache accounting). */
  readonly heldBytes: number
  /** Plaintext bytes [from, to). */
  slice(from: number, to: number): Buffer
  /**
   * Copies plaintext bytes [from, to) into `into` at `at` (a framed blob
   * decompresses whole frames straight there). `again`: the blob may be
   * read once more (it stays in a cache), so a frame decompressed for part
   * of its bytes is worth remembering.
   */
  copyInto(from: number, to: number, into: Buffer, at: number, again?: boolean): void
}

export function decodeBlob(keys: RepoKeys, id: Buffer, sealed: Buffer, rawLength?: number): Buffer {
  const blob = openBlob(keys, id, sealed, rawLength)
  return blob.slice(0, blob.rawLength)
}

/**
 * Decrypts a blob; a single-frame compressed blob is decompressed now, a
 * framed one on each slice. `inPlace`: `sealed` is the caller's to overwrite
 * (see Opener.open).
 */
export function openBlob(keys: RepoKeys, id: Buffer, sealed: Buffer, rawLength?: number, inPlace = false): OpenedBlob {
  const name = `blob ${id.toString('hex').slice(0, 16)}`
  const body = keys.open('data', sealed, blobAad(id), name, inPlace)
  const flag = body[0]
  const payload = body.subarray(1)
  let blob: OpenedBlob
  if (flag === FLAG_RAW) blob = new PlainBlob(payload)
  else if (flag === FLAG_ZSTD) blob = new PlainBlob(decompress(name, payload))
  else if (flag === FLAG_ZSTD_FRAMES) blob = new FramedBlob(name, payload)
  else throw new BlobCorruptError(`${name}: unknown encoding ${flag}`)
  if (rawLength !== undefined && blob.rawLength !== rawLength) {
    throw new BlobCorruptError(`${name}: ${blob.rawLength} bytes, expected ${rawLength}`)
  }
  return blob
}

function decompress(name: string, frame: Buffer): Buffer {
  decompressor ??= new Decompressor()
  try {
    return decompressor.decompress(frame)
  } catch (err) {
    throw new BlobCorruptError(`${name}: zstd payload does not decompress: ${(err as Error).message}`)
  }
}

class PlainBlob implements OpenedBlob {
  constructor(private readonly data: Buffer) {}
  get rawLength(): number {
    return this.data.length
  }
  get heldBytes(): number {
    return this.data.length
  }
  slice(from: number, to: number): Buffer {
    return this.data.subarray(from, to)
  }
  copyInto(from: number, to: number, into: Buffer, at: number): void {
    this.data.copy(into, at, from, Math.min(to, this.data.length))
  }
}

class FramedBlob implements OpenedBlob {
  readonly rawLength: number
  private readonly frameBytes: number
  /** Where each frame starts in the payload, and where the last ends. */
  private readonly bounds: number[]
  /** The frame decompressed last: a reader going through a frame in small steps decompresses it once. */
  private last?: { index: number; data: Buffer }

  constructor(
    private readonly name: string,
    private readonly payload: Buffer,
  ) {
    if (payload.length < 8) throw new BlobCorruptError(`${name}: framed payload too short`)
    this.rawLength = payload.readUInt32LE(0)
    this.frameBytes = payload.readUInt32LE(4)
    const count = this.frameBytes > 0 ? Math.ceil(this.rawLength / this.frameBytes) : -1
    if (count < 1 || payload.length < 8 + 4 * count) throw new BlobCorruptError(`${name}: framed payload has a damaged header`)
    this.bounds = [8 + 4 * count]
    for (let i = 0; i < count; i++) this.bounds.push(this.bounds[i] + payload.readUInt32LE(8 + 4 * i))
    if (this.bounds[count] !== payload.length) throw new BlobCorruptError(`${name}: framed payload is ${payload.length} bytes, its header says ${this.bounds[count]}`)
  }

  get heldBytes(): number {
    return this.payload.length + this.frameBytes
  }

  slice(from: number, to: number): Buffer {
    to = Math.min(to, this.rawLength)
    if (to <= from) return Buffer.alloc(0)
    const first = Math.floor(from / this.frameBytes)
    if (first === Math.floor((to - 1) / this.frameBytes)) return this.frame(first).subarray(from - first * this.frameBytes, to - first * this.frameBytes)
    const out = Buffer.allocUnsafe(to - from)
    this.copyInto(from, to, out, 0)
    return out
  }

  /**
   * A frame the range covers whole is decompressed straight into `into`: a
   * flush rewriting chunks around random writes reads most of a file this
   * way, and decompressing each frame into a buffer of its own, then joining
   * them, then copying the result was two thirds of the bytes it allocated.
   */
  copyInto(from: number, to: number, into: Buffer, at: number, again = true): void {
    to = Math.min(to, this.rawLength)
    if (to <= from) return
    const first = Math.floor(from / this.frameBytes)
    const last = Math.floor((to - 1) / this.frameBytes)
    for (let i = first; i <= last; i++) {
      const start = i * this.frameBytes
      const length = Math.min(this.frameBytes, this.rawLength - start)
      const dst = at + start - from
      if (start >= from && start + length <= to && this.last?.index !== i) {
        this.decompressInto(i, into.subarray(dst, dst + length))
        continue
      }
      const frame = again || this.last?.index === i || length > FRAME_SCRATCH.length ? this.frame(i) : this.scratchFrame(i, length)
      frame.copy(into, Math.max(at, dst), Math.max(0, from - start), Math.min(length, to - start))
    }
  }

  /**
   * Frame `index` decompressed into the shared scratch buffer, valid until
   * the next call: a flush reads the edges of the chunks around changed
   * bytes once, and a buffer of their own per edge was most of what it
   * allocated (4 KiB random writes to a 128 MiB file: ~140 MiB in 1,100
   * frames at the final flush, garbage until V8's next collection).
   */
  private scratchFrame(index: number, length: number): Buffer {
    const scratch = FRAME_SCRATCH.subarray(0, length)
    this.decompressInto(index, scratch)
    return scratch
  }

  private decompressInto(index: number, dst: Buffer): void {
    intoContext ??= new zstdBinding.DCtx()
    let written: number
    try {
      written = intoContext.decompress(dst, this.payload.subarray(this.bounds[index], this.bounds[index + 1]))
    } catch (err) {
      throw new BlobCorruptError(`${this.name}: zstd payload does not decompress: ${(err as Error).message}`)
    }
    if (written !== dst.length) throw new BlobCorruptError(`${this.name}: frame ${index} is ${written} bytes, expected ${dst.length}`)
  }

  private frame(index: number): Buffer {
    if (this.last?.index === index) return this.last.data
    const data = decompress(this.name, this.payload.subarray(this.bounds[index], this.bounds[index + 1]))
    const expected = Math.min(this.frameBytes, this.rawLength - index * this.frameBytes)
    if (data.length !== expected) throw new BlobCorruptError(`${this.name}: frame ${index} is ${data.length} bytes, expected ${expected}`)
    this.last = { index, data }
    return data
  }
}
