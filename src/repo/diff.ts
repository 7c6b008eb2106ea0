import { decodeDirent, decodeInode, direntPrefix, inodeKey, KIND, prefixEnd, readU64, ROOT_INO, S_IFDIR, S_IFLNK, S_IFMT, S_IFREG } from '../fs/index.js'
import { diffTrees, Tree, type Child, type PageStore } from '../meta/index.js'

export interface DiffEntry {
  path: string
  type: 'file' | 'dir' | 'symlink' | 'other'
}

export interface VolumeDiff {
  added: DiffEntry[]
  removed: DiffEntry[]
  modified: DiffEntry[]
}

function typeName(mode: number): DiffEntry['type'] {
  const t = mode & S_IFMT
  return t === S_IFREG ? 'file' : t === S_IFDIR ? 'dir' : t === S_IFLNK ? 'symlink' : 'other'
}

/** Resolves inode numbers to paths in one tree, caching directory listings. */
export class PathResolver {
  private readonly names = new Map<number, Map<number, string>>()
  /** Every name in the tree by inode, read once if ever needed (see path). */
  private anywhere?: Map<number, { parent: number; name: string }>

  constructor(private readonly tree: Tree) {}

  async path(ino: number): Promise<string | undefined> {
    const parts: string[] = []
    let at = ino
    for (let depth = 0; at !== ROOT_INO; depth++) {
      if (depth > 4096) return undefined
      const raw = await this.tree.get(inodeKey(at))
      if (!raw) return undefined
      const inode = decodeInode(at, raw)
      if (inode.nlink === 0) return undefined // unnamed (being written, or unlinked but open)
      let parent = inode.parent
      let name = (await this.listing(parent)).get(at)
      if (name === undefined) {
        if (inode.nlink < 2) return undefined
        // A hard-linked file keeps the directory of the name it was created under, which may be gone while
        // other names remain: look for one of those (a scan of every name, once per resolver).
        const other = (await this.allNames()).get(at)
        if (!other) return undefined
        ;({ parent, name } = other)
      }
      parts.unshift(name)
      at = parent
    }
    return '/' + parts.join('/')
  }

  private async allNames(): Promise<Map<number, { parent: number; name: string }>> {
    if (!this.anywhere) {
      const map = new Map<number, { parent: number; name: string }>()
      const from = String.fromCharCode(KIND.dirent)
      for await (const [key, val] of this.tree.entries(from, String.fromCharCode(KIND.dirent + 1))) {
        const entry = decodeDirent(val)
        if (!map.has(entry.ino)) map.set(entry.ino, { parent: readU64(key, 1), name: Buffer.from(key.slice(9), 'latin1').toString('utf8') })
      }
      this.anywhere = map
    }
    return this.anywhere
  }

  async entryPath(parent: number, name: string): Promise<string | undefined> {
    const dir = await this.path(parent)
    return dir === undefined ? undefined : dir === '/' ? `/${name}` : `${dir}/${name}`
  }

  private async listing(dir: number): Promise<Map<number, string>> {
    let map = this.names.get(dir)
    if (!map) {
      map = new Map()
      const prefix = direntPrefix(dir)
      for await (const [key, val] of this.tree.entries(prefix, prefixEnd(prefix))) {
        const entry = decodeDirent(val)
        if (!map.has(entry.ino)) map.set(entry.ino, Buffer.from(key.slice(prefix.length), 'latin1').toString('utf8'))
      }
      this.names.set(dir, map)
    }
    return map
  }
}

/**
 * Path-level changes between two roots: names added or removed (a rename is
 * both), and files whose content, attributes or xattrs changed or that were
 * replaced by another file of the same type. Reads only the pages that
 * differ, plus what it takes to name the paths.
 */
export async function diffRoots(pages: PageStore, a: Child | undefined, b: Child | undefined): Promise<VolumeDiff> {
  const changes = await diffTrees(pages, a, b)
  const before = new PathResolver(new Tree(pages, a))
  const after = new PathResolver(new Tree(pages, b))
  const out: VolumeDiff = { added: [], removed: [], modified: [] }
  const touchedNames = new Set<number>()
  const modifiedInodes = new Set<number>()
  const xattrInodes = new Set<number>()
  /** Inodes whose extents or xattrs changed (not only the inode record, as a rename changes it). */
  const contentInodes = new Set<number>()
  for (const c of changes) {
    const kind = c.key.charCodeAt(0)
    if (kind === KIND.dirent) {
      const parent = readU64(c.key, 1)
      const name = Buffer.from(c.key.slice(9), 'latin1').toString('utf8')
      const oldEntry = c.before ? decodeDirent(c.before) : undefined
      const newEntry = c.after ? decodeDirent(c.after) : undefined
      if (oldEntry && newEntry && oldEntry.ino === newEntry.ino) continue
      if (oldEntry && newEntry && oldEntry.type === newEntry.type) {
        // The name now holds another file of the same type (replaced whole, as a save by rename does): to a
        // path-level reader that is a modification, as git reports it.
        const path = await after.entryPath(parent, name)
        if (path) out.modified.push({ path, type: typeName(newEntry.type) })
        touchedNames.add(oldEntry.ino)
        touchedNames.add(newEntry.ino)
        continue
      }
      if (oldEntry) {
        const path = await before.entryPath(parent, name)
        if (path) out.removed.push({ path, type: typeName(oldEntry.type) })
        touchedNames.add(oldEntry.ino)
      }
      if (newEntry) {
        const path = await after.entryPath(parent, name)
        if (path) out.added.push({ path, type: typeName(newEntry.type) })
        touchedNames.add(newEntry.ino)
      }
    } else if (kind === KIND.inode || kind === KIND.extent || kind === KIND.xattr) {
      modifiedInodes.add(readU64(c.key, 1))
      if (kind === KIND.xattr) xattrInodes.add(readU64(c.key, 1))
      if (kind !== KIND.inode) contentInodes.add(readU64(c.key, 1))
    }
  }
  const treeA = new Tree(pages, a)
  const treeB = new Tree(pages, b)
  const listed = new Set([...out.added, ...out.modified].map((e) => e.path))
  for (const ino of modifiedInodes) {
    const raw = await treeB.get(inodeKey(ino))
    if (!raw) continue
    const inode = decodeInode(ino, raw)
    if (touchedNames.has(ino)) {
      // Renamed, linked or unlinked: its new names are listed already. Modified too only if more than its
      // names changed (a hard-linked file written to while another of its names moved).
      const oldRaw = await treeA.get(inodeKey(ino))
      const old = oldRaw ? decodeInode(ino, oldRaw) : undefined
      const same = old && !contentInodes.has(ino) && old.size === inode.size && old.mode === inode.mode && old.uid === inode.uid && old.gid === inode.gid && old.mtime.s === inode.mtime.s && old.mtime.ns === inode.mtime.ns
      if (same || !old) continue
      const path = await after.path(ino)
      if (path && !listed.has(path)) {
        out.modified.push({ path, type: typeName(inode.mode) })
        listed.add(path)
      }
      continue
    }
    // A directory whose entries changed shows up through those entries, and its times change with them:
    // it is modified itself only if its mode, owner or xattrs changed.
    if ((inode.mode & S_IFMT) === S_IFDIR && !xattrInodes.has(ino)) {
      const oldRaw = await treeA.get(inodeKey(ino))
      if (!oldRaw) continue
      const old = decodeInode(ino, oldRaw)
      if (old.mode === inode.mode && old.uid === inode.uid && old.gid === inode.gid) continue
    }
    const path = await after.path(ino)
    if (path && !listed.has(path)) {
      out.modified.push({ path, type: typeName(inode.mode) })
      listed.add(path)
    }
  }
  for (const list of [out.added, out.removed, out.modified]) list.sort((x, y) => (x.path < y.path ? -1 : x.path > y.path ? 1 : 0))
  return out
}
