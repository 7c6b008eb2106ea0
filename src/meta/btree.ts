import {
  branchEntryBytes,
  childIndex,
  isPageRef,
  leafEntryBytes,
  leafSearch,
  leafValue,
  leafValueLength,
  newBranch,
  newLeaf,
  portableValues,
  sameRef,
  type Child,
  type Node,
  type PageRef,
} from './node.js'
import type { PackWriter, PageStore } from './pages.js'

/** Split a page above this size; merge neighbours below MIN when they fit in one. */
export const MAX_PAGE_BYTES = 32 * 1024
export const MIN_PAGE_BYTES = 8 * 1024

/** A leaf made writable, with the branch frames above it (root first). */
interface MutablePath {
  leaf: Node
  stack: { node: Node; index: number }[]
}

/** Returned by getResident when a page on the path is not in memory. */
export const NOT_RESIDENT = Symbol('not resident')

let lastEpoch = 0
/** Epochs are unique across all trees of the process, so two trees never both own a node. */
function nextEpoch(): number {
  return ++lastEpoch
}

/**
 * A persistent ordered map (copy-on-write B+tree) of binary-string keys to
 * byte values. Pages load lazily through the PageStore. A tree mutates only
 * nodes of its own current epoch and copies everything else on the path it
 * changes, so `freeze()` is O(1): it returns the current root and moves the
 * tree to a new epoch, after which the frozen root never changes again.
 */
export class Tree {
  private epoch = nextEpoch()
  private owned = 0

  constructor(
    readonly pages: PageStore,
    private root: Child | undefined = undefined,
  ) {}

  /** The current root (a node or a persisted reference), undefined when empty. */
  get rootChild(): Child | undefined {
    return this.root
  }

  /**
   * Nodes changed or created since the last freeze: what the next commit
   * writes, and what the tree holds in memory in its expanded (mutable) form.
   */
  get dirtyPages(): number {
    return this.owned
  }

  /** Freezes the current state and returns its root; later changes copy-on-write. */
  freeze(): Child | undefined {
    this.epoch = nextEpoch()
    this.owned = 0
    return this.root
  }

  /** A new tree starting from this tree's frozen state; the two evolve independently. */
  fork(): Tree {
    return new Tree(this.pages, this.freeze())
  }

  /**
   * Reads a key. Fast path: when every page on the way is in memory (the
   * usual case), no await happens at all; otherwise the path is loaded first.
   */
  async get(key: string): Promise<Buffer | undefined> {
    const found = this.getResident(key)
    if (found !== NOT_RESIDENT) return found
    const path = await this.loadPath(key)
    const leaf = path[path.length - 1]
    if (!leaf) return undefined
    const { index, found: hit } = leafSearch(leaf, key)
    return hit ? leafValue(leaf, index) : undefined
  }

  /** The value if the whole path is in memory; NOT_RESIDENT otherwise. */
  getResident(key: string): Buffer | undefined | typeof NOT_RESIDENT {
    let child = this.root
    while (child) {
      const node = this.resident(child)
      if (!node) return NOT_RESIDENT
      if (node.leaf) {
        const { index, found } = leafSearch(node, key)
        return found ? leafValue(node, index) : undefined
      }
      child = node.children[childIndex(node, key)]
    }
    return undefined
  }

  async put(key: string, val: Buffer): Promise<void> {
    if (this.putResident(key, val)) return
    const { leaf, stack } = await this.writablePath(key)
    this.putInto(leaf, stack, key, val)
  }

  /**
   * put() when every page on the key's path is in memory (the usual case),
   * without an await; false, and nothing observable changed, otherwise.
   */
  putResident(key: string, val: Buffer): boolean {
    if (!this.root) {
      this.root = newLeaf(this.epoch, [key], [val])
      this.owned++
      return true
    }
    const path = this.mutablePath(key)
    if (!path) return false
    this.putInto(path.leaf, path.stack, key, val)
    return true
  }

  /** Whether reading `key` needs no page load. */
  isResident(key: string): boolean {
    return this.getResident(key) !== NOT_RESIDENT
  }

  private putInto(leaf: Node, stack: { node: Node; index: number }[], key: string, val: Buffer): void {
    const { index, found } = leafSearch(leaf, key)
    if (found) {
      leaf.bytes += val.length - leafValueLength(leaf, index)
      leaf.vals[index] = val
    } else {
      leaf.keys.splice(index, 0, key)
      leaf.vals.splice(index, 0, val)
      leaf.bytes += leafEntryBytes(key, val.length)
    }
    if (leaf.bytes > MAX_PAGE_BYTES) this.splitUp(leaf, stack)
  }

  /** Removes a key; returns whether it existed. */
  async delete(key: string): Promise<boolean> {
    if (!this.root || (await this.get(key)) === undefined) return false
    const { leaf, stack } = await this.writablePath(key)
    const { index, found } = leafSearch(leaf, key)
    if (!found) return false
    leaf.bytes -= leafEntryBytes(key, leafValueLength(leaf, index))
    leaf.keys.splice(index, 1)
    leaf.vals.splice(index, 1)
    await this.rebalanceUp(leaf, stack)
    return true
  }

  private resident(child: Child): Node | undefined {
    return isPageRef(child) ? this.pages.peek(child) : child
  }

  /**
   * Loads the pages from the root to the leaf for `key` and returns them, root
   * first. Callers use the returned nodes rather than re-reading the cache: a
   * small cache may already have evicted the top of the path by the time the
   * leaf arrives, and re-checking residency would then never finish.
   */
  private async loadPath(key: string): Promise<Node[]> {
    const path: Node[] = []
    let child = this.root
    while (child) {
      const node = await this.pages.resolve(child)
      path.push(node)
      if (node.leaf) break
      child = node.children[childIndex(node, key)]
    }
    return path
  }

  async has(key: string): Promise<boolean> {
    return (await this.get(key)) !== undefined
  }

  /** Entries with start <= key < end, in order. */
  async *entries(start: string, end: string): AsyncGenerator<[string, Buffer]> {
    if (!this.root) return
    const stack: { node: Node; index: number }[] = []
    let node = await this.pages.resolve(this.root)
    while (!node.leaf) {
      const index = childIndex(node, start)
      stack.push({ node, index })
      node = await this.pages.resolve(node.children[index])
    }
    let i = leafSearch(node, start).index
    for (;;) {
      for (; i < node.keys.length; i++) {
        if (node.keys[i] >= end) return
        yield [node.keys[i], leafValue(node, i)]
      }
      // Next leaf: climb to the first ancestor with a child to the right, then descend leftmost.
      let frame = stack.pop()
      while (frame && frame.index + 1 >= frame.node.children.length) frame = stack.pop()
      if (!frame) return
      frame.index++
      if (frame.node.keys[frame.index] >= end) return
      stack.push(frame)
      node = await this.pages.resolve(frame.node.children[frame.index])
      while (!node.leaf) {
        stack.push({ node, index: 0 })
        node = await this.pages.resolve(node.children[0])
      }
      i = 0
    }
  }

  /** The last entry with key < `before` and key >= `start`, if any (one descent, not a scan from `start`). */
  async lastBefore(start: string, before: string): Promise<[string, Buffer] | undefined> {
    if (!this.root) return undefined
    const stack: { node: Node; index: number }[] = []
    let node = await this.pages.resolve(this.root)
    while (!node.leaf) {
      const index = childIndex(node, before)
      stack.push({ node, index })
      node = await this.pages.resolve(node.children[index])
    }
    let i = leafSearch(node, before).index - 1
    if (i < 0) {
      // Previous leaf: climb to the first ancestor with a child to the left, then descend rightmost.
      let frame = stack.pop()
      while (frame && frame.index === 0) frame = stack.pop()
      if (!frame) return undefined
      node = await this.pages.resolve(frame.node.children[frame.index - 1])
      while (!node.leaf) node = await this.pages.resolve(node.children[node.children.length - 1])
      i = node.keys.length - 1
    }
    if (i < 0 || node.keys[i] < start) return undefined
    return [node.keys[i], leafValue(node, i)]
  }

  /**
   * Writes every node reachable from `root` that is not yet persisted into
   * `pack`, children before parents, and returns the root's reference. The
   * refs are provisional until the pack is stored: call `confirm` after the
   * upload succeeds or `abandon` if it fails.
   */
  static persist(root: Child, pack: PackWriter): { ref: PageRef; written: Node[] } {
    const written: Node[] = []
    const visit = (child: Child): PageRef => {
      if (isPageRef(child)) return child
      if (child.ref) return child.ref
      if (!child.leaf) for (const c of child.children) visit(c)
      child.ref = pack.add(child)
      written.push(child)
      return child.ref
    }
    return { ref: visit(root), written }
  }

  static abandon(written: Node[]): void {
    for (const node of written) node.ref = undefined
  }

  /**
   * After a commit: replaces in-memory nodes that are persisted by their
   * references, so memory holds only what changed since (the page cache has
   * compact copies, see PageStore.rememberWritten). Safe on shared nodes: a
   * node and its reference denote the same page.
   */
  compact(): void {
    const visit = (node: Node): void => {
      if (node.leaf) return
      for (let i = 0; i < node.children.length; i++) {
        const c = node.children[i]
        if (isPageRef(c)) continue
        visit(c)
        if (c.ref) node.children[i] = c.ref
      }
    }
    if (!this.root || isPageRef(this.root)) return
    visit(this.root)
    if (this.root.ref) this.root = this.root.ref
  }

  // --- mutation internals ---------------------------------------------------

  private own(node: Node): Node {
    if (node.epoch === this.epoch) return node
    this.owned++
    return {
      leaf: node.leaf,
      keys: node.keys.slice(),
      vals: node.vals.slice(),
      children: node.children.slice(),
      epoch: this.epoch,
      bytes: node.bytes,
      source: node.source,
    }
  }

  /**
   * Descends to the leaf for `key`, owning (copying) every node on the way.
   * Each page comes from memory or, failing that, from `loaded` (see
   * loadPath) — but only if it is the very page the tree points at now: the
   * tree may have changed while the path was loading.
   */
  private mutablePath(key: string, loaded?: Node[]): MutablePath | undefined {
    const top = this.current(this.root!, loaded?.[0])
    if (!top) return undefined
    const root = this.own(top)
    this.root = root
    const stack: { node: Node; index: number }[] = []
    let node = root
    while (!node.leaf) {
      const index = childIndex(node, key)
      const next = this.current(node.children[index], loaded?.[stack.length + 1])
      // Owning the nodes above changed nothing observable, so giving up here is safe.
      if (!next) return undefined
      const child = this.own(next)
      node.children[index] = child
      stack.push({ node, index })
      node = child
    }
    return { leaf: node, stack }
  }

  /** The node `child` denotes: in memory, or `candidate` when that is the same persisted page. */
  private current(child: Child, candidate: Node | undefined): Node | undefined {
    const node = this.resident(child)
    if (node) return node
    if (candidate?.ref && isPageRef(child) && sameRef(candidate.ref, child)) return candidate
    return undefined
  }

  /**
   * The owned path to `key`'s leaf, loading pages as needed. Retries when the
   * tree changed under a load (a commit replaced nodes by fresh page refs).
   */
  private async writablePath(key: string): Promise<MutablePath> {
    for (;;) {
      const loaded = this.isResident(key) ? undefined : await this.loadPath(key)
      const path = this.mutablePath(key, loaded)
      if (path) return path
    }
  }

  private splitUp(node: Node, stack: { node: Node; index: number }[]): void {
    let current = node
    for (;;) {
      if (current.bytes <= MAX_PAGE_BYTES || current.keys.length < 2) return
      const right = this.splitNode(current)
      const separator = right.keys[0]
      if (!right.leaf) right.keys[0] = ''
      const parentFrame = stack.pop()
      if (!parentFrame) {
        this.root = newBranch(this.epoch, ['', separator], [current, right])
        this.owned++
        return
      }
      const parent = parentFrame.node
      parent.keys.splice(parentFrame.index + 1, 0, separator)
      parent.children.splice(parentFrame.index + 1, 0, right)
      parent.bytes += branchEntryBytes(separator)
      current = parent
    }
  }

  /** Splits a node in two halves by size; returns the new right half. */
  private splitNode(node: Node): Node {
    const half = node.bytes / 2
    let acc = 8
    let at = 1
    for (; at < node.keys.length - 1; at++) {
      acc += node.leaf ? leafEntryBytes(node.keys[at - 1], leafValueLength(node, at - 1)) : branchEntryBytes(node.keys[at - 1])
      if (acc >= half) break
    }
    this.owned++
    const right = node.leaf
      ? newLeaf(this.epoch, node.keys.splice(at), node.vals.splice(at), node.source)
      : newBranch(this.epoch, node.keys.splice(at), node.children.splice(at))
    node.bytes -= right.bytes - 8
    return right
  }

  private async rebalanceUp(node: Node, stack: { node: Node; index: number }[]): Promise<void> {
    let current = node
    for (;;) {
      const frame = stack.pop()
      if (!frame) break
      const parent = frame.node
      if (current.keys.length === 0) {
        this.removeChild(parent, frame.index)
      } else if (current.bytes < MIN_PAGE_BYTES && parent.children.length > 1) {
        const leftIndex = frame.index + 1 < parent.children.length ? frame.index : frame.index - 1
        const left = this.own(await this.pages.resolve(parent.children[leftIndex]))
        const right = this.own(await this.pages.resolve(parent.children[leftIndex + 1]))
        if (left.bytes + right.bytes - 8 <= MAX_PAGE_BYTES) {
          if (left.leaf) {
            left.keys.push(...right.keys)
            left.vals.push(...(right.source === left.source ? right.vals : portableValues(right)))
          } else {
            // The right branch's first key is minus infinity; in the merged node it is the parent's separator.
            left.keys.push(parent.keys[leftIndex + 1], ...right.keys.slice(1))
            left.children.push(...right.children)
          }
          left.bytes += right.bytes - 8
          parent.children[leftIndex] = left
          this.removeChild(parent, leftIndex + 1)
        }
      }
      current = parent
    }
    // Shrink the root: an empty leaf means an empty tree; a branch with one child is that child.
    while (this.root && !isPageRef(this.root)) {
      const root = this.root
      if (root.leaf) {
        if (root.keys.length === 0) this.root = undefined
        return
      }
      if (root.children.length === 0) {
        this.root = undefined
        return
      }
      if (root.children.length > 1) return
      this.root = root.children[0]
    }
  }

  private removeChild(parent: Node, index: number): void {
    parent.bytes -= branchEntryBytes(parent.keys[index])
    parent.keys.splice(index, 1)
    parent.children.splice(index, 1)
    if (index === 0 && parent.keys.length > 0) parent.keys[0] = ''
  }
}
