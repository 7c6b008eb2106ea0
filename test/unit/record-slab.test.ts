import { describe, expect, it } from 'vitest'
import { decodeKv, encodeKv } from '../../src/fs/journal.js'
import { packRecord, recordCopy } from '../../src/fs/records.js'
import { RecordSlab } from '../../src/util/record-slab.js'

describe('RecordSlab', () => {
  it('cuts small buffers from shared slabs without overlap, and gives large ones their own', () => {
    const slab = new RecordSlab(1024, 256)
    const cut = Array.from({ length: 40 }, (_, i) => {
      const b = slab.alloc(1 + ((i * 37) % 100))
      b.fill(i)
      return b
    })
    // Each buffer still holds what was written into it: none overlaps another.
    cut.forEach((b, i) => expect(b.every((x) => x === i)).toBe(true))
    const slabs = new Set(cut.map((b) => b.buffer))
    expect(slabs.size).toBeGreaterThan(1)
    expect(slabs.size).toBeLessThan(cut.length)
    for (const s of slabs) expect(s.byteLength).toBe(1024)
    const large = slab.alloc(257)
    expect(large.length).toBe(257)
    expect(large.byteOffset).toBe(0)
    expect(large.buffer.byteLength).toBe(257)
  })

  it('keeps tree records and stored names out of Node\'s shared buffer pool, which request garbage fills', () => {
    // A pooled buffer pins its whole 8 KiB slab: a record kept in the tree must not share one.
    const pool = Buffer.allocUnsafe(16).buffer
    const record = packRecord([1, 2, Buffer.from('x')])
    expect(record.buffer).not.toBe(pool)
    expect(record.buffer.byteLength).toBeGreaterThan(record.length)
    const name = Buffer.from('file-name.js')
    const copy = recordCopy(name)
    expect(copy.equals(name)).toBe(true)
    expect(copy.buffer).not.toBe(name.buffer)
    expect(copy.buffer).toBe(packRecord([3]).buffer)
    // Values replayed from the log are such copies too.
    const [[, value]] = decodeKv(encodeKv([['k', name]]))
    expect(value!.equals(name)).toBe(true)
    expect(value!.buffer).toBe(record.buffer)
  })
})
