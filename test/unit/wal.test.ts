import { randomBytes } from 'node:crypto'
import { describe, expect, it } from 'vitest'
import { RepoKeys } from '../../src/crypto/index.js'
import { Wal } from '../../src/portal/index.js'
import { tempDir } from '../helpers/stores.js'

describe('write-ahead log read-back', () => {
  it('reads records that left memory from disk, decrypting a shared frame once for concurrent readers', async () => {
    const keys = new RepoKeys(randomBytes(32), 'test-repo')
    const tmp = tempDir('s0fs-wal-')
    const wal = await Wal.create(tmp.dir, keys, { volumeId: 'v', session: 's', baseGeneration: 0 })
    try {
      // 8 MiB of 4 KiB records: more than the in-memory read-back cache holds.
      const payloads = Array.from({ length: 2048 }, () => randomBytes(4096))
      const locs = payloads.map((p) => wal.append(1, p, true))
      await wal.sync()
      const before = wal.stats.framesRead
      // The first ten records share the first frame; read them all at once.
      const got = await Promise.all(locs.slice(0, 10).map((loc) => wal.read(loc)))
      got.forEach((g, i) => expect(g.equals(payloads[i])).toBe(true))
      expect(wal.stats.framesRead - before).toBe(1)
      // Every record reads back byte for byte, from memory or disk.
      for (const i of [0, 500, 1500, 2047]) expect((await wal.read(locs[i])).equals(payloads[i])).toBe(true)
    } finally {
      await wal.close()
      tmp.cleanup()
    }
  })
})
