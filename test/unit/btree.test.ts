import { randomBytes } from 'node:crypto'
import { describe, expect, it } from 'vitest'
import { RepoKeys } from '../../src/crypto/index.js'
import { Tree } from '../../src/meta/btree.js'
import { isPageRef, type Child } from '../../src/meta/node.js'
import { PackWriter, packKey, PageStore } from '../../src/meta/pages.js'
import { MemoryStore } from '../../src/store/index.js'
import { mulberry32 } from '../../src/store/index.js'

function env() {
  const keys = new RepoKeys(randomBytes(32), 'r')
  const store = new MemoryStore(`bt-${randomBytes(4).toString('hex')}`)
  return { keys, store, pages: new PageStore(store, keys, 1024 * 1024) }
}

async function commit(tree: Tree, keys: RepoKeys, store: MemoryStore): Promise<{ root?: Child; pages: number }> {
  const root = tree.freeze()
  if (!root) return { root: undefined, pages: 0 }
  const pack = new PackWriter(keys)
  const { ref, written } = Tree.persist(root, pack)
  if (pack.pageCount > 0) await store.put(packKey(pack.id), pack.finish())
  tree.pages.rememberWritten(pack)
  tree.compact()
  return { root: ref, pages: written.length }
}

async function dump(tree: Tree): Promise<[string, string][]> {
  const out: [string, string][] = []
  for await (const [k, v] of tree.entries('', '\uffff')) out.push([k, v.toString('latin1')])
  return out
}

describe('copy-on-write B+tree', () => {
  it('matches a reference map through random puts, deletes, commits and reopens', async () => {
    const { keys, store, pages } = env()
    const rand = mulberry32(42)
    const model = new Map<string, string>()
    let tree = new Tree(pages)
    for (let round = 0; round < 12; round++) {
      for (let i = 0; i < 1500; i++) {
        const k = 'k' + Math.floor(rand() * 4000).toString().padStart(5, '0') + 'x'.repeat(Math.floor(rand() * 40))
        if (rand() < 0.3) {
          expect(await tree.delete(k)).toBe(model.delete(k))
        } else {
          const v = randomBytes(Math.floor(rand() * 200)).toString('latin1')
          await tree.put(k, Buffer.from(v, 'latin1'))
          model.set(k, v)
        }
      }
      const { root } = await commit(tree, keys, store)
      // Reopen from the persisted root with a cold cache.
      tree = new Tree(new PageStore(store, keys, 64 * 1024), root)
      expect(await dump(tree)).toEqual([...model].sort(([a], [b]) => (a < b ? -1 : 1)))
      for (const k of [...model.keys()].slice(0, 50)) expect((await tree.get(k))!.toString('latin1')).toBe(model.get(k))
      expect(await tree.get('missing')).toBeUndefined()
      // lastBefore: one descent (across leaf edges) must find what a scan finds.
      const sorted = [...model.keys()].sort()
      for (let q = 0; q < 200; q++) {
        const before = 'k' + Math.floor(rand() * 4100).toString().padStart(5, '0')
        const start = 'k' + Math.floor(rand() * 4100).toString().padStart(5, '0')
        const want = sorted.filter((k) => k < before && k >= start).pop()
        expect((await tree.lastBefore(start, before))?.[0], `${start}..${before}`).toBe(want)
      }
    }
    void pages
  })

  it('keeps every change when puts and deletes on a cold, tiny cache interleave', async () => {
    const { keys, store, pages } = env()
    const tree = new Tree(pages)
    for (let i = 0; i < 4000; i++) await tree.put(`c${String(i).padStart(5, '0')}`, Buffer.alloc(40, 1))
    const { root } = await commit(tree, keys, store)
    // Cold: every path must load, and a 32 KiB cache evicts pages while others load.
    const cold = new Tree(new PageStore(store, keys, 32 * 1024), root)
    const ops: Promise<unknown>[] = []
    for (let i = 0; i < 4000; i += 7) ops.push(cold.put(`c${String(i).padStart(5, '0')}`, Buffer.from(`new ${i}`)))
    for (let i = 3; i < 4000; i += 11) if (i % 7 !== 0) ops.push(cold.delete(`c${String(i).padStart(5, '0')}`))
    await Promise.all(ops)
    for (let i = 0; i < 4000; i++) {
      const got = await cold.get(`c${String(i).padStart(5, '0')}`)
      if (i % 7 === 0) expect(got?.toString(), `c${i}`).toBe(`new ${i}`)
      else if (i % 11 === 3) expect(got, `c${i}`).toBeUndefined()
      else expect(got?.length, `c${i}`).toBe(40)
    }
  })

  it('scans ranges across leaf boundaries', async () => {
    const { pages } = env()
    const tree = new Tree(pages)
    for (let i = 0; i < 5000; i++) await tree.put(`r${String(i).padStart(5, '0')}`, Buffer.alloc(20, 1))
    const got: string[] = []
    for await (const [k] of tree.entries('r01000', 'r01100')) got.push(k)
    expect(got).toHaveLength(100)
    expect(got[0]).toBe('r01000')
    expect(got[99]).toBe('r01099')
  })

  it('keeps a frozen root unchanged while the tree moves on', async () => {
    const { keys, store, pages } = env()
    const tree = new Tree(pages)
    for (let i = 0; i < 3000; i++) await tree.put(`a${i}`, Buffer.from(`v${i}`))
    const frozen = new Tree(pages, tree.freeze())
    for (let i = 0; i < 3000; i += 2) await tree.delete(`a${i}`)
    await tree.put('a7', Buffer.from('changed'))
    expect((await frozen.get('a7'))!.toString()).toBe('v7')
    expect((await frozen.get('a0'))!.toString()).toBe('v0')
    expect((await dump(frozen)).length).toBe(3000)
    expect((await tree.get('a7'))!.toString()).toBe('changed')
    expect(await tree.get('a0')).toBeUndefined()
    void keys
    void store
  })

  it('writes O(log n) pages for a small change to a large tree', async () => {
    const { keys, store, pages } = env()
    const tree = new Tree(pages)
    for (let i = 0; i < 100_000; i++) await tree.put(`f${String(i).padStart(7, '0')}`, Buffer.alloc(60, i & 255))
    const first = await commit(tree, keys, store)
    expect(first.pages).toBeGreaterThan(100)
    for (let i = 0; i < 10; i++) await tree.put(`f${String(i * 9973).padStart(7, '0')}`, Buffer.alloc(60, 7))
    const second = await commit(tree, keys, store)
    // 10 leaves at most, plus the branch pages above them.
    expect(second.pages).toBeLessThanOrEqual(10 + 3 * 2)
    expect(isPageRef(second.root!)).toBe(true)
  })
})
