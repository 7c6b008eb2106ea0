import { createHash } from 'node:crypto'
import { lstatSync, readdirSync, readFileSync, readlinkSync } from 'node:fs'
import path from 'node:path'

/** One file-tree entry as the tests compare it: type, mode, owner, size, times, content, link target. */
export interface TreeEntry {
  type: 'file' | 'dir' | 'symlink' | 'fifo' | 'socket' | 'other'
  mode: number
  uid: number
  gid: number
  size: number
  nlink: number
  mtimeNs: bigint
  hash?: string
  target?: string
}

export function snapshotTree(root: string): Map<string, TreeEntry> {
  const out = new Map<string, TreeEntry>()
  const walk = (rel: string) => {
    const full = path.join(root, rel)
    const st = lstatSync(full, { bigint: true })
    const type = st.isFile() ? 'file' : st.isDirectory() ? 'dir' : st.isSymbolicLink() ? 'symlink' : st.isFIFO() ? 'fifo' : st.isSocket() ? 'socket' : 'other'
    const entry: TreeEntry = {
      type,
      mode: Number(st.mode & 0o7777n),
      uid: Number(st.uid),
      gid: Number(st.gid),
      size: type === 'dir' ? 0 : Number(st.size),
      nlink: type === 'dir' ? 0 : Number(st.nlink),
      mtimeNs: st.mtimeNs,
    }
    if (type === 'file') entry.hash = createHash('sha256').update(readFileSync(full)).digest('hex')
    if (type === 'symlink') entry.target = readlinkSync(full)
    out.set(rel || '.', entry)
    if (type === 'dir') for (const name of readdirSync(full).sort()) walk(rel ? `${rel}/${name}` : name)
  }
  walk('')
  return out
}

export interface CompareOptions {
  /** Compare modification times: to the nanosecond, to the second, or not at all. */
  mtime?: 'ns' | 's' | false
  /** Compare hard-link counts of files. */
  nlink?: boolean
  /** Compare owners. */
  owner?: boolean
  /** Ignore these relative paths (and everything below them). */
  ignore?: string[]
}

/** Differences between two snapshots, as readable lines (empty when equal). */
export function compareTrees(expected: Map<string, TreeEntry>, actual: Map<string, TreeEntry>, options: CompareOptions = {}): string[] {
  const diffs: string[] = []
  const ignored = (p: string) => (options.ignore ?? []).some((i) => p === i || p.startsWith(i + '/'))
  for (const [p, e] of expected) {
    if (ignored(p)) continue
    const a = actual.get(p)
    if (!a) {
      diffs.push(`missing: ${p}`)
      continue
    }
    const fields: (keyof TreeEntry)[] = ['type', 'mode', 'size', 'hash', 'target']
    if (options.owner !== false) fields.push('uid', 'gid')
    if (options.nlink) fields.push('nlink')
    for (const f of fields) if (e[f] !== a[f]) diffs.push(`${p}: ${f} ${String(e[f])} != ${String(a[f])}`)
    if (options.mtime === 'ns' && e.type !== 'symlink' && e.mtimeNs !== a.mtimeNs) diffs.push(`${p}: mtime ${e.mtimeNs} != ${a.mtimeNs}`)
    if (options.mtime === 's' && e.type !== 'symlink' && e.mtimeNs / 1_000_000_000n !== a.mtimeNs / 1_000_000_000n) diffs.push(`${p}: mtime(s) ${e.mtimeNs} != ${a.mtimeNs}`)
  }
  for (const p of actual.keys()) if (!expected.has(p) && !ignored(p)) diffs.push(`unexpected: ${p}`)
  return diffs
}
