import { Packr } from 'msgpackr'
import { describe, expect, it } from 'vitest'
import { dataRecord, decodeDataHeader, decodeKv, decodeKvMsgpack, encodeKv, writeDataHeader } from '../../src/fs/journal.js'
import { decodeInode, encodeInode, packRecord, type Inode } from '../../src/fs/records.js'

const msgpackr = new Packr({ useRecords: false })

describe('record encoding', () => {
  it('writes the bytes msgpackr writes, at every width of number and byte string', () => {
    const numbers = [
      0, 1, 0x1f, 0x20, 0x7f, 0x80, 0xff, 0x100, 0xffff, 0x1_0000, 0xffff_ffff, 0x1_0000_0000, Number.MAX_SAFE_INTEGER,
      -1, -0x20, -0x21, -0x80, -0x81, -0x8000, -0x8001, -0x8000_0000, -0x8000_0001, -Number.MAX_SAFE_INTEGER,
      1.5, -2.25, 1_764_660_000, 999_999_999,
    ]
    for (const n of numbers) expect(packRecord([n]).equals(Buffer.from(msgpackr.pack([n]))), `number ${n}`).toBe(true)
    for (const length of [0, 1, 0xff, 0x100, 0xffff, 0x1_0000]) {
      const bytes = Buffer.alloc(length, 7)
      expect(packRecord([1, bytes]).equals(Buffer.from(msgpackr.pack([1, bytes]))), `${length} bytes`).toBe(true)
    }
    const row = Array.from({ length: 15 }, (_, i) => i * 1000)
    expect(packRecord(row).equals(Buffer.from(msgpackr.pack(row)))).toBe(true)
    expect(() => packRecord(Array.from({ length: 16 }, () => 0))).toThrow(RangeError)
  })

  it('round-trips an inode, a symlink target included', () => {
    const inode: Inode = {
      ino: 42,
      mode: 0o120777,
      uid: 1000,
      gid: 0xffff_fffe,
      nlink: 1,
      size: 5 * 2 ** 40,
      atime: { s: -1, ns: 999_999_999 },
      mtime: { s: 1_764_660_000, ns: 0 },
      ctime: { s: 2 ** 33, ns: 1 },
      rdev: 0,
      parent: 7,
      nextCookie: 3,
      target: Buffer.from('../somewhere/else'),
    }
    expect(decodeInode(42, encodeInode(inode))).toEqual(inode)
  })

  it('logs metadata changes in their own layout and still reads the msgpack one', () => {
    const changes: [string, Buffer | null][] = [
      ['\x01\x00\x00\x00\x00\x00\x00\x00\x2a', Buffer.from([1, 2, 3])],
      ['\x02' + 'é'.repeat(300), Buffer.alloc(0)],
      ['\x05gone', null],
    ]
    expect(decodeKv(encodeKv(changes))).toEqual(changes)
    const old = Buffer.from(msgpackr.pack(changes.map(([k, v]) => [Buffer.from(k, 'latin1'), v])))
    expect(decodeKvMsgpack(old)).toEqual(changes)
    expect(() => decodeKv(encodeKv(changes).subarray(0, 20))).toThrow(RangeError)
  })

  it('round-trips a data record header at 64-bit widths, a time before 1970 included', () => {
    for (const [ino, off, s] of [
      [2, 0, 1_764_660_000],
      [2 ** 40 + 3, 2 ** 50 + 5, 2 ** 33],
      [7, 4096, -86_400],
    ]) {
      const record = dataRecord(Buffer.from('bytes'))
      writeDataHeader(record, ino, off, { s, ns: 999_999_999 })
      expect(decodeDataHeader(record)).toEqual({ ino, off, time: { s, ns: 999_999_999 }, length: 5 })
    }
  })
})
