/**
 * A plain in-memory reference filesystem for model-based tests: the POSIX
 * behaviour s0fs must match, written as simply as possible.
 */

export type Code = 'ENOENT' | 'EEXIST' | 'ENOTDIR' | 'EISDIR' | 'ENOTEMPTY' | 'EINVAL' | 'EPERM' | 'ENODATA'

export class ModelError extends Error {
  constructor(readonly code: Code) {
    super(code)
  }
}

interface MNode {
  id: number
  type: 'file' | 'dir' | 'symlink'
  mode: number
  data: Buffer
  target?: string
  xattrs: Map<string, Buffer>
  entries?: Map<string, number>
  parent?: number
  nlink: number
}

export interface Snapshot {
  [path: string]: string
}

export class ModelFs {
  private nodes = new Map<number, MNode>()
  private next = 2

  constructor() {
    this.nodes.set(1, { id: 1, type: 'dir', mode: 0o755, data: Buffer.alloc(0), xattrs: new Map(), entries: new Map(), parent: 1, nlink: 2 })
  }

  clone(): ModelFs {
    const copy = new ModelFs()
    copy.next = this.next
    copy.nodes = new Map(
      [...this.nodes].map(([id, n]) => [
        id,
        { ...n, data: Buffer.from(n.data), xattrs: new Map(n.xattrs), entries: n.entries ? new Map(n.entries) : undefined },
      ]),
    )
    return copy
  }

  private resolveDir(parts: string[]): MNode {
    let node = this.nodes.get(1)!
    for (const part of parts) {
      if (node.type !== 'dir') throw new ModelError('ENOTDIR')
      const id = node.entries!.get(part)
      if (id === undefined) throw new ModelError('ENOENT')
      node = this.nodes.get(id)!
    }
    if (node.type !== 'dir') throw new ModelError('ENOTDIR')
    return node
  }

  private lookup(path: string[]): { dir: MNode; name: string; node?: MNode } {
    const dir = this.resolveDir(path.slice(0, -1))
    const name = path[path.length - 1]
    const id = dir.entries!.get(name)
    return { dir, name, node: id === undefined ? undefined : this.nodes.get(id) }
  }

  private existing(path: string[]): MNode {
    if (path.length === 0) return this.nodes.get(1)!
    const { node } = this.lookup(path)
    if (!node) throw new ModelError('ENOENT')
    return node
  }

  private add(dir: MNode, name: string, node: Omit<MNode, 'id'>): MNode {
    const full = { ...node, id: this.next++ }
    this.nodes.set(full.id, full)
    dir.entries!.set(name, full.id)
    if (full.type === 'dir') dir.nlink++
    return full
  }

  mkdir(path: string[]): void {
    const { dir, name, node } = this.lookup(path)
    if (node) throw new ModelError('EEXIST')
    // A directory made inside a set-group-ID directory inherits the bit (Linux, like ext4).
    const mode = 0o755 | (dir.mode & 0o2000)
    this.add(dir, name, { type: 'dir', mode, data: Buffer.alloc(0), xattrs: new Map(), entries: new Map(), parent: dir.id, nlink: 2 })
  }

  create(path: string[]): void {
    const { dir, name, node } = this.lookup(path)
    if (node) throw new ModelError('EEXIST')
    this.add(dir, name, { type: 'file', mode: 0o644, data: Buffer.alloc(0), xattrs: new Map(), nlink: 1 })
  }

  symlink(path: string[], target: string): void {
    const { dir, name, node } = this.lookup(path)
    if (node) throw new ModelError('EEXIST')
    this.add(dir, name, { type: 'symlink', mode: 0o777, data: Buffer.alloc(0), target, xattrs: new Map(), nlink: 1 })
  }

  write(path: string[], off: number, data: Buffer): void {
    const node = this.existing(path)
    if (node.type === 'dir') throw new ModelError('EISDIR')
    if (node.type !== 'file') throw new ModelError('EINVAL')
    if (node.data.length < off + data.length) node.data = Buffer.concat([node.data, Buffer.alloc(off + data.length - node.data.length)])
    data.copy(node.data, off)
  }

  truncate(path: string[], size: number): void {
    const node = this.existing(path)
    if (node.type === 'dir') throw new ModelError('EISDIR')
    if (node.type !== 'file') throw new ModelError('EINVAL')
    node.data = size <= node.data.length ? Buffer.from(node.data.subarray(0, size)) : Buffer.concat([node.data, Buffer.alloc(size - node.data.length)])
  }

  read(path: string[]): Buffer {
    const node = this.existing(path)
    if (node.type === 'dir') throw new ModelError('EISDIR')
    return node.type === 'symlink' ? Buffer.alloc(0) : Buffer.from(node.data)
  }

  unlink(path: string[]): void {
    const { dir, name, node } = this.lookup(path)
    if (!node) throw new ModelError('ENOENT')
    if (node.type === 'dir') throw new ModelError('EISDIR')
    dir.entries!.delete(name)
    if (--node.nlink === 0) this.nodes.delete(node.id)
  }

  rmdir(path: string[]): void {
    const { dir, name, node } = this.lookup(path)
    if (!node) throw new ModelError('ENOENT')
    if (node.type !== 'dir') throw new ModelError('ENOTDIR')
    if (node.entries!.size > 0) throw new ModelError('ENOTEMPTY')
    dir.entries!.delete(name)
    dir.nlink--
    this.nodes.delete(node.id)
  }

  link(src: string[], dst: string[]): void {
    // Linux order: both paths resolve, the new name must be free, then a directory is refused.
    const node = this.existing(src)
    const { dir, name, node: existing } = this.lookup(dst)
    if (existing) throw new ModelError('EEXIST')
    if (node.type === 'dir') throw new ModelError('EPERM')
    dir.entries!.set(name, node.id)
    node.nlink++
  }

  /** flags: 0, 1 (NOREPLACE), 2 (EXCHANGE). */
  rename(src: string[], dst: string[], flags: number): void {
    // Linux resolves both parent directories before it looks at either name.
    this.resolveDir(src.slice(0, -1))
    this.resolveDir(dst.slice(0, -1))
    const s = this.lookup(src)
    if (!s.node) throw new ModelError('ENOENT')
    const d = this.lookup(dst)
    if (flags === 1 && d.node) throw new ModelError('EEXIST')
    if (flags === 2 && !d.node) throw new ModelError('ENOENT')
    const isAncestor = (ancestor: MNode, of: MNode): boolean => {
      let at = of
      for (;;) {
        if (at.id === ancestor.id) return true
        if (at.id === 1) return false
        at = this.nodes.get(at.parent!)!
      }
    }
    if (s.node.type === 'dir' && s.dir.id !== d.dir.id && isAncestor(s.node, d.dir)) throw new ModelError('EINVAL')
    if (flags === 2 && d.node!.type === 'dir' && s.dir.id !== d.dir.id && isAncestor(d.node!, s.dir)) throw new ModelError('EINVAL')
    if (d.node && d.node.id === s.node.id) return
    if (flags === 2) {
      const other = d.node!
      s.dir.entries!.set(s.name, other.id)
      d.dir.entries!.set(d.name, s.node.id)
      if (s.dir.id !== d.dir.id) {
        if (s.node.type === 'dir') (s.node.parent = d.dir.id), d.dir.nlink++, s.dir.nlink--
        if (other.type === 'dir') (other.parent = s.dir.id), s.dir.nlink++, d.dir.nlink--
      }
      return
    }
    if (d.node) {
      if (s.node.type === 'dir' && d.node.type !== 'dir') throw new ModelError('ENOTDIR')
      if (s.node.type !== 'dir' && d.node.type === 'dir') throw new ModelError('EISDIR')
      if (d.node.type === 'dir' && d.node.entries!.size > 0) throw new ModelError('ENOTEMPTY')
      if (d.node.type === 'dir') {
        d.dir.nlink--
        this.nodes.delete(d.node.id)
      } else if (--d.node.nlink === 0) this.nodes.delete(d.node.id)
    }
    s.dir.entries!.delete(s.name)
    d.dir.entries!.set(d.name, s.node.id)
    if (s.node.type === 'dir' && s.dir.id !== d.dir.id) {
      s.dir.nlink--
      d.dir.nlink++
    }
    if (s.node.type === 'dir') s.node.parent = d.dir.id
  }

  chmod(path: string[], mode: number): void {
    this.existing(path).mode = mode & 0o7777
  }

  setxattr(path: string[], name: string, value: Buffer, flags: number): void {
    const node = this.existing(path)
    if (node.type === 'symlink') throw new ModelError('EPERM')
    if (flags === 1 && node.xattrs.has(name)) throw new ModelError('EEXIST')
    if (flags === 2 && !node.xattrs.has(name)) throw new ModelError('ENODATA')
    node.xattrs.set(name, Buffer.from(value))
  }

  removexattr(path: string[], name: string): void {
    const node = this.existing(path)
    if (node.type === 'symlink') throw new ModelError('EPERM')
    if (!node.xattrs.delete(name)) throw new ModelError('ENODATA')
  }

  /** Every path with its observable state, as comparable strings. */
  snapshot(): Snapshot {
    const out: Snapshot = {}
    const walk = (node: MNode, path: string) => {
      out[path || '/'] = describe(node.type, node.mode, node.nlink, node.data, node.target, node.xattrs)
      if (node.type === 'dir') for (const [name, id] of [...node.entries!].sort()) walk(this.nodes.get(id)!, `${path}/${name}`)
    }
    walk(this.nodes.get(1)!, '')
    return out
  }
}

export function describe(type: string, mode: number, nlink: number, data: Buffer, target: string | undefined, xattrs: Map<string, Buffer>): string {
  const xa = [...xattrs].sort(([a], [b]) => (a < b ? -1 : 1)).map(([k, v]) => `${k}=${v.toString('hex')}`)
  const content = type === 'file' ? `size=${data.length} sha=${hash(data)}` : type === 'symlink' ? `-> ${target}` : ''
  return `${type} mode=${(mode & 0o7777).toString(8)} nlink=${nlink} ${content} [${xa.join(',')}]`
}

function hash(data: Buffer): string {
  // Cheap and deterministic; collisions are irrelevant at test sizes.
  let h = 2166136261
  for (let i = 0; i < data.length; i++) h = Math.imul(h ^ data[i], 16777619)
  return (h >>> 0).toString(16)
}
