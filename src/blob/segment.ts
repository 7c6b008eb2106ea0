import { randomBytes } from 'node:crypto'
import { pack, unpack } from 'msgpackr'
import type { RepoKeys } from '../crypto/index.js'

/**
 * A segment packs many sealed blobs into one object so a thousand small files
 * cost one PUT, while any single blob is still one ranged GET.
 *
 *   "S0FSSEG1" | blob records … | sealed index | indexOffset u64 | indexLength u32 | "S0FSEND1"
 *
 * The index (blob ID, offset, length, raw length of every record) is sealed
 * with the segment's ID as associated data; it lets the repository's blob index
 * be rebuilt from segments alone.
 */

export const SEGMENT_MAGIC = Buffer.from('S0FSSEG1')
const TRAILER_MAGIC = Buffer.from('S0FSEND1')
export const TRAILER_BYTES = 8 + 4 + 8

export interface BlobRef {
  /** Keyed content ID (32 bytes). */
  id: Buffer
  /** Segment ID (32 hex chars). */
  seg: string
  /** Offset and length of the sealed record within the segment. */
  off: number
  len: number
  /** Plaintext length. */
  raw: number
}

export function newSegmentId(): string {
  return randomBytes(16).toString('hex')
}

export function segmentKey(seg: string): string {
  return `seg/${seg.slice(0, 2)}/${seg}`
}

export function segmentIndexAad(seg: string): string {
  return `segidx:${seg}`
}

export class SegmentCorruptError extends Error {
  constructor(message: string) {
    super(message)
    this.name = 'SegmentCorruptError'
  }
}

/** Accumulates sealed blobs for one segment. */
export class SegmentBuilder {
  readonly id = newSegmentId()
  private readonly parts: Buffer[] = [SEGMENT_MAGIC]
  private readonly refs: BlobRef[] = []
  private readonly byOffset = new Map<number, Buffer>()
  private size = SEGMENT_MAGIC.length

  get byteLength(): number {
    return this.size
  }
  get blobCount(): number {
    return this.refs.length
  }
  get blobs(): readonly BlobRef[] {
    return this.refs
  }

  add(id: Buffer, sealed: Buffer, rawLength: number): BlobRef {
    const ref: BlobRef = { id, seg: this.id, off: this.size, len: sealed.length, raw: rawLength }
    this.parts.push(sealed)
    this.refs.push(ref)
    this.byOffset.set(ref.off, sealed)
    this.size += sealed.length
    return ref
  }

  /** The bytes of a blob added to this (unsealed) segment, for reads before upload. */
  slice(ref: BlobRef): Buffer | undefined {
    if (ref.seg !== this.id) return undefined
    const sealed = this.byOffset.get(ref.off)
    return sealed && sealed.length === ref.len ? sealed : undefined
  }

  /**
   * The segment object, as parts to write back to back (the store joins them
   * only if it must): the blobs, then their sealed index and the trailer.
   */
  finish(keys: RepoKeys): Buffer[] {
    const index = keys.seal('data', pack(this.refs.map((r) => [r.id, r.off, r.len, r.raw])), segmentIndexAad(this.id))
    const trailer = Buffer.alloc(TRAILER_BYTES)
    trailer.writeBigUInt64BE(BigInt(this.size), 0)
    trailer.writeUInt32BE(index.length, 8)
    TRAILER_MAGIC.copy(trailer, 12)
    return [...this.parts, index, trailer]
  }
}

/** Parses a segment's trailer and index (fsck, index rebuild). */
export function readSegmentIndex(keys: RepoKeys, seg: string, tail: Buffer, segmentLength: number): { indexOffset: number; indexLength: number; refs?: BlobRef[] } {
  if (tail.length < TRAILER_BYTES) throw new SegmentCorruptError(`segment ${seg}: truncated (no trailer)`)
  const trailer = tail.subarray(tail.length - TRAILER_BYTES)
  if (!trailer.subarray(12).equals(TRAILER_MAGIC)) throw new SegmentCorruptError(`segment ${seg}: truncated or damaged trailer`)
  const indexOffset = Number(trailer.readBigUInt64BE(0))
  const indexLength = trailer.readUInt32BE(8)
  if (indexOffset + indexLength + TRAILER_BYTES !== segmentLength) {
    throw new SegmentCorruptError(`segment ${seg}: trailer says ${indexOffset + indexLength + TRAILER_BYTES} bytes, object has ${segmentLength}`)
  }
  const sealedStart = tail.length - TRAILER_BYTES - indexLength
  if (sealedStart < 0) return { indexOffset, indexLength }
  const body = keys.open('data', tail.subarray(sealedStart, tail.length - TRAILER_BYTES), segmentIndexAad(seg), `segment ${seg} index`)
  const rows = unpack(body) as [Uint8Array, number, number, number][]
  const refs = rows.map(([id, off, len, raw]) => ({ id: Buffer.from(id), seg, off, len, raw }))
  return { indexOffset, indexLength, refs }
}

/**
 * Checks a whole segment: header, trailer, sealed index, and that every record
 * the index lists opens under its blob ID and decodes to its stated size.
 * Returns the refs; throws SegmentCorruptError naming the first damage found.
 */
export function verifySegment(keys: RepoKeys, seg: string, data: Buffer, decode: (ref: BlobRef, sealed: Buffer) => void): BlobRef[] {
  if (!data.subarray(0, SEGMENT_MAGIC.length).equals(SEGMENT_MAGIC)) throw new SegmentCorruptError(`segment ${seg}: bad header`)
  let parsed: ReturnType<typeof readSegmentIndex>
  try {
    parsed = readSegmentIndex(keys, seg, data, data.length)
  } catch (err) {
    if (err instanceof SegmentCorruptError) throw err
    throw new SegmentCorruptError(`segment ${seg}: index does not open: ${(err as Error).message}`)
  }
  const refs = parsed.refs!
  let expected = SEGMENT_MAGIC.length
  for (const ref of refs) {
    if (ref.off !== expected) throw new SegmentCorruptError(`segment ${seg}: index is inconsistent at offset ${ref.off}`)
    expected += ref.len
    try {
      decode(ref, data.subarray(ref.off, ref.off + ref.len))
    } catch (err) {
      throw new SegmentCorruptError(`segment ${seg}: blob ${ref.id.toString('hex').slice(0, 16)} at ${ref.off}: ${(err as Error).message}`)
    }
  }
  if (expected !== parsed.indexOffset) throw new SegmentCorruptError(`segment ${seg}: records end at ${expected}, index starts at ${parsed.indexOffset}`)
  return refs
}
