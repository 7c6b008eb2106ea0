/**
 * Nodes of the copy-on-write B+tree.
 *
 * Keys are binary strings (latin1: one char per byte, so JS string order is
 * byte order); leaf values are opaque byte buffers encoded by the layer above.
 * A branch's keys[i] is the smallest key its child i may hold (keys[0] is the
 * empty string, i.e. minus infinity).
 */

/** Where a persisted page lives: a range of a metadata pack object, and its keyed content hash. */
export interface PageRef {
  pack: string
  off: number
  len: number
  /** Keyed hash of the page plaintext (16 bytes); bound into the page's AEAD associated data. */
  id: Buffer
}

export type Child = Node | PageRef

/**
 * The values of a decoded leaf page: value v is plain[spans[2v], spans[2v+1]).
 * A leaf keeps its values as indexes into this instead of one Buffer object
 * each (~90 bytes of heap apiece): a page of 900 entries costs 7 KiB of slots
 * rather than 80 KiB of views, in the page cache and in every changed copy.
 */
export interface PageValues {
  plain: Buffer
  spans: Uint32Array
}

/** A leaf value: its bytes, or its index in the leaf's `source` page. */
export type LeafVal = Buffer | number

export interface Node {
  leaf: boolean
  keys: string[]
  /** Leaf values (read them with leafValue). */
  vals: LeafVal[]
  /** The decoded page numeric `vals` point into. */
  source?: PageValues
  /** Branch children. */
  children: Child[]
  /**
   * The tree epoch that created this node. A tree may mutate a node in place
   * only while its own epoch equals the node's; otherwise it copies the node
   * first. Freezing a tree bumps its epoch, so everything reachable from the
   * frozen root stays immutable.
   */
  epoch: number
  /** Approximate encoded size, for split decisions and cache accounting. */
  bytes: number
  /** Set once the node is persisted; a node with a ref and no later change is never written again. */
  ref?: PageRef
  /** Decoded pages: approximate memory held while cached. */
  memory?: number
}

/** Bytes a leaf entry adds to its page (key, value and framing). */
export function leafEntryBytes(key: string, valLength: number): number {
  return key.length + valLength + 6
}

/** The bytes of leaf value i. */
export function leafValue(node: Node, i: number): Buffer {
  const v = node.vals[i]
  if (typeof v !== 'number') return v
  const spans = node.source!.spans
  return node.source!.plain.subarray(spans[2 * v], spans[2 * v + 1])
}

export function leafValueLength(node: Node, i: number): number {
  const v = node.vals[i]
  if (typeof v !== 'number') return v.length
  const spans = node.source!.spans
  return spans[2 * v + 1] - spans[2 * v]
}

/** A leaf's values in a form that can move to a node with another source (page indexes resolved to bytes). */
export function portableValues(node: Node): LeafVal[] {
  return node.vals.map((v, i) => (typeof v === 'number' ? leafValue(node, i) : v))
}

/** Bytes a branch entry adds (key plus an encoded child reference). */
export function branchEntryBytes(key: string): number {
  return key.length + 48
}

export function isPageRef(child: Child): child is PageRef {
  return (child as PageRef).pack !== undefined
}

export function sameRef(a: PageRef, b: PageRef): boolean {
  return a.pack === b.pack && a.off === b.off && a.len === b.len
}

export function newLeaf(epoch: number, keys: string[] = [], vals: LeafVal[] = [], source?: PageValues): Node {
  const node: Node = { leaf: true, keys, vals, children: [], epoch, bytes: 8, source }
  for (let i = 0; i < keys.length; i++) node.bytes += leafEntryBytes(keys[i], leafValueLength(node, i))
  return node
}

export function newBranch(epoch: number, keys: string[], children: Child[]): Node {
  let bytes = 8
  for (const k of keys) bytes += branchEntryBytes(k)
  return { leaf: false, keys, vals: [], children, epoch, bytes }
}

/** Index of the child whose range holds `key`: the last i with keys[i] <= key. */
export function childIndex(node: Node, key: string): number {
  const keys = node.keys
  let lo = 0
  let hi = keys.length - 1
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1
    if (keys[mid] <= key) lo = mid
    else hi = mid - 1
  }
  return lo
}

/** Position of `key` in a leaf: found, or where it would be inserted. */
export function leafSearch(node: Node, key: string): { index: number; found: boolean } {
  const keys = node.keys
  let lo = 0
  let hi = keys.length
  while (lo < hi) {
    const mid = (lo + hi) >> 1
    if (keys[mid] < key) lo = mid + 1
    else hi = mid
  }
  return { index: lo, found: lo < keys.length && keys[lo] === key }
}
