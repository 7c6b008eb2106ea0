import { isPageRef, leafValue, type Child, type Node, type PageRef } from './node.js'
import type { PageStore } from './pages.js'

/**
 * Key-level differences between two tree roots, reading only what differs.
 *
 * Trees derived from one another by copy-on-write share every untouched
 * subtree by reference, so: collect the page references of tree B, walk A
 * without descending into any subtree B also has, collect the leaves only A
 * has; the same the other way; then compare the entries of just those leaves.
 * A key lives in exactly one leaf of each tree, so a key in a shared leaf is
 * identical on both sides and a changed key is always in the "only" leaves.
 */

export interface KeyChange {
  key: string
  before?: Buffer
  after?: Buffer
}

function refId(ref: PageRef): string {
  return `${ref.pack}:${ref.off}`
}

function childId(child: Child): string | undefined {
  if (isPageRef(child)) return refId(child)
  return child.ref ? refId(child.ref) : undefined
}

/** Every page reference reachable from `root` through branches (leaves are not loaded). */
async function referenced(pages: PageStore, root: Child | undefined): Promise<Set<string>> {
  const seen = new Set<string>()
  const visit = async (child: Child): Promise<void> => {
    const id = childId(child)
    if (id) seen.add(id)
    const node = isPageRef(child) ? await pages.load(child) : child
    if (!node.leaf) for (const c of node.children) await visit(c)
  }
  if (root) await visit(root)
  return seen
}

/** Leaves under `root` that are not inside any subtree in `shared`. */
async function onlyLeaves(pages: PageStore, root: Child | undefined, shared: Set<string>): Promise<Node[]> {
  const out: Node[] = []
  const visit = async (child: Child): Promise<void> => {
    const id = childId(child)
    if (id && shared.has(id)) return
    const node = await pages.resolve(child)
    if (node.leaf) out.push(node)
    else for (const c of node.children) await visit(c)
  }
  if (root) await visit(root)
  return out
}

export async function diffTrees(pages: PageStore, a: Child | undefined, b: Child | undefined): Promise<KeyChange[]> {
  const inB = await referenced(pages, b)
  const leavesA = await onlyLeaves(pages, a, inB)
  const inA = await referenced(pages, a)
  const leavesB = await onlyLeaves(pages, b, inA)
  const before = new Map<string, Buffer>()
  for (const leaf of leavesA) leaf.keys.forEach((k, i) => before.set(k, leafValue(leaf, i)))
  const changes: KeyChange[] = []
  for (const leaf of leavesB) {
    leaf.keys.forEach((key, i) => {
      const after = leafValue(leaf, i)
      const old = before.get(key)
      before.delete(key)
      if (!old || !old.equals(after)) changes.push({ key, before: old, after })
    })
  }
  for (const [key, old] of before) changes.push({ key, before: old })
  return changes.sort((x, y) => (x.key < y.key ? -1 : x.key > y.key ? 1 : 0))
}
