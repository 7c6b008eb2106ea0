/**
 * 64-bit little-endian integers as JS numbers (exact below 2^53), without
 * the BigInt readBigUInt64LE/writeBigUInt64LE allocate on every call: these
 * run for every FUSE request and every log record.
 */
export function writeU64(buf: Buffer, off: number, n: number): void {
  buf.writeUInt32LE(n >>> 0, off)
  buf.writeUInt32LE(Math.floor(n / 0x1_0000_0000) >>> 0, off + 4)
}

export function readU64(buf: Buffer, off: number): number {
  return buf.readUInt32LE(off) + buf.readUInt32LE(off + 4) * 0x1_0000_0000
}

/** A signed 64-bit field (times before 1970 are negative seconds). writeU64 writes negatives as two's complement already. */
export function readS64(buf: Buffer, off: number): number {
  return buf.readUInt32LE(off) + buf.readInt32LE(off + 4) * 0x1_0000_0000
}
