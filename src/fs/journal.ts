import { Packr } from 'msgpackr'
import { readS64, readU64, writeU64 } from '../util/u64.js'
import { decodeExtent, encodeExtent, recordCopy, type Extent, type Timespec } from './records.js'

/**
 * Log record kinds. Every record states an absolute outcome (set these keys,
 * these bytes, this size), never a delta, so replaying the log from any point
 * at or before the committed head reproduces exactly the state at the end.
 */
export const REC = {
  /** Metadata changes as msgpack: written by s0fs before 2026-12-02, still replayed. */
  kvMsgpack: 1,
  /** Bytes written to a file (size grows to cover them, mtime set). */
  data: 2,
  /** File size set (shrinking drops data beyond it). */
  truncate: 3,
  /** A hole punched (fallocate PUNCH_HOLE). */
  punch: 4,
  /** Pending bytes of a range replaced by stored blobs. */
  extents: 5,
  /** Metadata changes: keys to set or delete (encodeKv). */
  kv: 6,
} as const

const packr = new Packr({ useRecords: false })

export const DATA_HEADER = 28

/** A value length that marks a deleted key in a metadata-changes record. */
const DELETED = 0xffff_ffff

/**
 * A metadata-changes record: u32 count, then per change u16 key length, the
 * key (latin1), u32 value length (DELETED for a deletion) and the value.
 * Every create, setattr and rename logs one; as msgpack (REC.kvMsgpack) its
 * encoding cost ~10 µs, this layout ~1.5.
 */
export function encodeKv(changes: readonly (readonly [string, Buffer | null, ...unknown[]])[]): Buffer {
  let size = 4
  for (const [key, val] of changes) size += 6 + key.length + (val ? val.length : 0)
  const out = Buffer.allocUnsafe(size)
  out.writeUInt32LE(changes.length, 0)
  let at = 4
  for (const [key, val] of changes) {
    out.writeUInt16LE(key.length, at)
    at += 2 + out.write(key, at + 2, 'latin1')
    out.writeUInt32LE(val ? val.length : DELETED, at)
    at += 4 + (val ? val.copy(out, at + 4) : 0)
  }
  return out
}

export function decodeKv(payload: Buffer): [string, Buffer | null][] {
  const changes: [string, Buffer | null][] = []
  const count = payload.readUInt32LE(0)
  let at = 4
  const take = (length: number): number => {
    if (at + length > payload.length) throw new RangeError('metadata record overruns its payload')
    at += length
    return at - length
  }
  for (let i = 0; i < count; i++) {
    const keyLength = payload.readUInt16LE(take(2))
    const keyAt = take(keyLength)
    const key = payload.toString('latin1', keyAt, keyAt + keyLength)
    const valLength = payload.readUInt32LE(take(4))
    if (valLength === DELETED) changes.push([key, null])
    else {
      const valAt = take(valLength)
      changes.push([key, recordCopy(payload.subarray(valAt, valAt + valLength))])
    }
  }
  return changes
}

/** A metadata-changes record of the older msgpack layout (REC.kvMsgpack). */
export function decodeKvMsgpack(payload: Buffer): [string, Buffer | null][] {
  return (packr.unpack(payload) as [Uint8Array, Uint8Array | null][]).map(([k, v]) => [
    Buffer.from(k).toString('latin1'),
    v ? Buffer.from(v) : null,
  ])
}

/**
 * A written-data record: the header, then the bytes. The bytes are copied in
 * now and the header filled in later (`writeDataHeader`), when the write
 * holds the lock and knows its time: one copy of the caller's data in all.
 */
export function dataRecord(data: Uint8Array): Buffer {
  const record = Buffer.allocUnsafe(DATA_HEADER + data.length)
  record.set(data, DATA_HEADER)
  return record
}

export function writeDataHeader(record: Buffer, ino: number, off: number, time: Timespec): void {
  writeU64(record, 0, ino)
  writeU64(record, 8, off)
  writeU64(record, 16, time.s)
  record.writeUInt32LE(time.ns, 24)
}

export function decodeDataHeader(payload: Buffer): { ino: number; off: number; time: Timespec; length: number } {
  return {
    ino: readU64(payload, 0),
    off: readU64(payload, 8),
    time: { s: readS64(payload, 16), ns: payload.readUInt32LE(24) },
    length: payload.length - DATA_HEADER,
  }
}

export function encodeTruncate(ino: number, size: number, time: Timespec): Buffer {
  return packr.pack([ino, size, time.s, time.ns])
}

export function decodeTruncate(payload: Buffer): { ino: number; size: number; time: Timespec } {
  const [ino, size, s, ns] = packr.unpack(payload) as number[]
  return { ino, size, time: { s, ns } }
}

export function encodePunch(ino: number, off: number, len: number, time: Timespec): Buffer {
  return packr.pack([ino, off, len, time.s, time.ns])
}

export function decodePunch(payload: Buffer): { ino: number; off: number; len: number; time: Timespec } {
  const [ino, off, len, s, ns] = packr.unpack(payload) as number[]
  return { ino, off, len, time: { s, ns } }
}

export interface ExtentsRecord {
  ino: number
  start: number
  end: number
  /** Pending pieces of [start, end) with a sequence number up to this one are now in the extents. */
  maxSeq: number
  extents: Extent[]
}

export function encodeExtents(r: ExtentsRecord): Buffer {
  return packr.pack([r.ino, r.start, r.end, r.maxSeq, r.extents.map((e) => [e.off, encodeExtent(e)])])
}

export function decodeExtents(payload: Buffer): ExtentsRecord {
  const [ino, start, end, maxSeq, rows] = packr.unpack(payload) as [number, number, number, number, [number, Uint8Array][]]
  return { ino, start, end, maxSeq, extents: rows.map(([off, b]) => decodeExtent(off, Buffer.from(b))) }
}

/**
 * The segments a logged flush (an extents record) points at; none for any
 * other record. Replay uses it to find flushes whose segments are gone.
 */
export function flushedSegments(kind: number, payload: Buffer): string[] {
  if (kind !== REC.extents) return []
  return [...new Set(decodeExtents(payload).extents.map((e) => e.blob.seg))]
}
