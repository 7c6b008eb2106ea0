import { randomBytes } from 'node:crypto'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { listAll, NotFoundError, PreconditionFailedError, type ObjectStore } from '../../src/store/index.js'
import { storeFactories } from '../helpers/stores.js'

/**
 * One contract, every backend: memory, file, and each live S3 server the global
 * setup started (s3rver, Ceph RGW, and S0FS_TEST_S3_URL if set).
 */
for (const factory of storeFactories()) {
  describe(`ObjectStore conformance: ${factory.name}`, () => {
    let store: ObjectStore
    let cleanup: () => void

    beforeAll(() => {
      ;({ store, cleanup } = factory.make())
    })
    afterAll(() => cleanup())

    it('round-trips 0 B, 1 B and 1 MiB objects byte for byte', async () => {
      for (const size of [0, 1, 1024 * 1024]) {
        const data = randomBytes(size)
        await store.put(`rt/obj-${size}`, data)
        expect((await store.get(`rt/obj-${size}`)).equals(data)).toBe(true)
      }
    })

    it('writes an object given in parts as the parts back to back', async () => {
      // More parts than one writev takes (IOV_MAX is 1,024), empty ones among them.
      const parts = Array.from({ length: 1_100 }, (_, i) => randomBytes(i % 7 === 0 ? 0 : 1 + (i % 300)))
      const joined = Buffer.concat(parts)
      const before = store.counters.bytesOut
      await store.put('parts/obj', parts)
      expect((await store.get('parts/obj')).equals(joined)).toBe(true)
      expect(store.counters.bytesOut - before).toBe(joined.length)
      await store.put('parts/empty', [])
      expect((await store.get('parts/empty')).length).toBe(0)
    })

    it('reports a missing object as NotFoundError, and head as undefined', async () => {
      await expect(store.get('missing/object')).rejects.toBeInstanceOf(NotFoundError)
      await expect(store.getVersioned('missing/object')).rejects.toBeInstanceOf(NotFoundError)
      expect(await store.head('missing/object')).toBeUndefined()
    })

    it('serves byte ranges, open-ended ranges and the empty range at the end', async () => {
      const data = randomBytes(10_000)
      await store.put('range/obj', data)
      expect((await store.get('range/obj', { start: 100, end: 200 })).equals(data.subarray(100, 200))).toBe(true)
      expect((await store.get('range/obj', { start: 9_990 })).equals(data.subarray(9_990))).toBe(true)
      expect((await store.get('range/obj', { start: 0, end: 1 })).equals(data.subarray(0, 1))).toBe(true)
      expect((await store.get('range/obj', { start: 10_000 })).length).toBe(0)
      // A range past the end is clamped, as S3 does.
      expect((await store.get('range/obj', { start: 9_000, end: 20_000 })).equals(data.subarray(9_000))).toBe(true)
    })

    it('gives a version tag that matches head and changes on every replacement', async () => {
      await store.put('ver/obj', Buffer.from('one'))
      const v1 = await store.getVersioned('ver/obj')
      expect(v1.data.toString()).toBe('one')
      expect((await store.head('ver/obj'))!.etag).toBe(v1.etag)
      await store.put('ver/obj', Buffer.from('two'))
      const v2 = await store.getVersioned('ver/obj')
      expect(v2.etag).not.toBe(v1.etag)
      expect((await store.head('ver/obj'))!.size).toBe(3)
    })

    it('put-if-absent creates once and refuses the second time', async () => {
      await store.putIfAbsent('cas/absent', Buffer.from('first'))
      await expect(store.putIfAbsent('cas/absent', Buffer.from('second'))).rejects.toBeInstanceOf(PreconditionFailedError)
      expect((await store.get('cas/absent')).toString()).toBe('first')
    })

    it('put-if-match swaps only on the current version tag', async () => {
      const { etag } = await store.put('cas/match', Buffer.from('v1'))
      const current = (await store.head('cas/match'))!.etag
      expect(current).toBe(etag)
      const swapped = await store.putIfMatch('cas/match', Buffer.from('v2'), current)
      await expect(store.putIfMatch('cas/match', Buffer.from('v3'), current)).rejects.toBeInstanceOf(PreconditionFailedError)
      await expect(store.putIfMatch('cas/missing', Buffer.from('x'), current)).rejects.toBeInstanceOf(PreconditionFailedError)
      expect((await store.get('cas/match')).toString()).toBe('v2')
      expect((await store.head('cas/match'))!.etag).toBe(swapped.etag)
    })

    it.runIf(factory.atomic)('lets exactly one of 8 racing put-if-absent writers win', async () => {
      const results = await Promise.allSettled(
        Array.from({ length: 8 }, (_, i) => store.putIfAbsent('cas/race-absent', Buffer.from(`writer ${i}`))),
      )
      expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(1)
      for (const r of results) if (r.status === 'rejected') expect(r.reason).toBeInstanceOf(PreconditionFailedError)
    })

    it.runIf(factory.atomic)('lets exactly one of 8 racing compare-and-swap writers win', async () => {
      const { etag } = await store.put('cas/race-match', Buffer.from('start'))
      const base = (await store.head('cas/race-match'))?.etag ?? etag
      const results = await Promise.allSettled(
        Array.from({ length: 8 }, (_, i) => store.putIfMatch('cas/race-match', Buffer.from(`writer ${i}`), base)),
      )
      expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(1)
      for (const r of results) if (r.status === 'rejected') expect(r.reason).toBeInstanceOf(PreconditionFailedError)
    })

    it('lists by prefix in byte order, page by page', async () => {
      // '-' sorts before '/' and '0' after it: a backend walking directories must still list in key order.
      const keys = ['ls/a-b', 'ls/a/c', 'ls/a0', 'ls/b/1', 'ls/b/2', 'ls/c', 'ls2/x'].sort()
      for (const k of keys) await store.put(k, Buffer.from(k))
      const seen: string[] = []
      let startAfter: string | undefined
      for (let pages = 0; pages < 10; pages++) {
        const page = await store.listPage('ls/', { startAfter, limit: 2 })
        expect(page.objects.length).toBeLessThanOrEqual(2)
        seen.push(...page.objects.map((o) => o.key))
        if (!page.next) break
        startAfter = page.next
      }
      expect(seen).toEqual(keys.filter((k) => k.startsWith('ls/')))
      const all: string[] = []
      for await (const o of listAll(store, 'ls')) all.push(o.key)
      expect(all).toEqual(keys)
      const sizes = (await store.listPage('ls/b/')).objects.map((o) => o.size)
      expect(sizes).toEqual([6, 6])
    })

    it('deletes many keys, ignoring absent ones', async () => {
      await store.put('del/1', Buffer.from('1'))
      await store.put('del/2', Buffer.from('2'))
      await store.deleteMany(['del/1', 'del/2', 'del/never-existed'])
      expect(await store.head('del/1')).toBeUndefined()
      expect(await store.head('del/2')).toBeUndefined()
      expect((await store.listPage('del/')).objects).toEqual([])
    })

    it('rejects keys that could escape the repository', async () => {
      for (const bad of ['../x', '/abs', 'a//b', 'a/../b', '.hidden', 'a/.tmp/x', '']) {
        await expect(store.put(bad, Buffer.from('x'))).rejects.toThrow(/invalid object key/)
      }
    })

    it('counts requests and bytes', async () => {
      const before = { ...store.counters }
      await store.put('count/x', Buffer.alloc(1000))
      await store.get('count/x')
      expect(store.counters.put - before.put).toBe(1)
      expect(store.counters.get - before.get).toBe(1)
      expect(store.counters.bytesOut - before.bytesOut).toBe(1000)
      expect(store.counters.bytesIn - before.bytesIn).toBe(1000)
    })
  })
}
