import { Relocations, segmentKey, type BlobRef } from '../blob/index.js'
import { decodeExtent, FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE, KIND, readU64, ROOT } from '../fs/index.js'
import { isPageRef, leafValue, Tree, type Child, type PageRef } from '../meta/index.js'
import { listAll } from '../store/index.js'
import { PathResolver } from './diff.js'
import type { Repository } from './repository.js'

/**
 * Checks a repository: every metadata page reachable from a volume head or a
 * snapshot must exist and decrypt; every blob a file references must lie in
 * an existing segment (and, with readData, decrypt to its content ID). Each
 * problem is reported with the volumes, snapshots and paths it affects.
 *
 * Repair (volumes only; snapshots are immutable) punches the damaged ranges
 * out of the affected files, so they read as zeros instead of failing with
 * EIO, and records each file's lost ranges in its `user.s0fs.damaged`
 * extended attribute: the loss is reported, never silent.
 */

export interface FsckOptions {
  /** Read and verify every referenced blob (all data), not only that its segment exists. */
  readData?: boolean
  /** Make damaged files readable (volumes only). Implies nothing about pages: lost metadata is reported, not invented. */
  repair?: boolean
  /** Where the repair's writer keeps its log. */
  portalDir?: string
  onProgress?: (p: { phase: 'metadata' | 'data' | 'repair'; done: number; total?: number }) => void
}

/** One damaged file range. */
export interface DamagedRange {
  ref: string
  path: string
  ino: number
  start: number
  end: number
}

export interface FsckProblem {
  kind: 'page' | 'blob'
  /** What is wrong, in words. */
  detail: string
  /** The volumes and snapshots that contain it. */
  refs: string[]
  /** Affected file ranges (blobs), or the paths whose metadata is lost (pages), where they can be named. */
  ranges: DamagedRange[]
  paths: string[]
}

export interface FsckReport {
  volumes: number
  snapshots: number
  pages: number
  inodes: number
  extents: number
  blobs: number
  segments: number
  bytesVerified: number
  problems: FsckProblem[]
  /** Ranges made readable (zeros) by --repair. */
  repaired: DamagedRange[]
  ok: boolean
}

interface BlobUse {
  ref: string
  ino: number
  start: number
  end: number
}

interface RootToCheck {
  ref: string
  kind: 'volume' | 'snapshot'
  root: PageRef | null
}

function pageId(ref: PageRef): string {
  return `${ref.pack}:${ref.off}`
}

export async function fsck(repo: Repository, options: FsckOptions = {}): Promise<FsckReport> {
  const volumes = await repo.refs.listVolumes()
  const snapshots = await repo.refs.listSnapshots()
  const roots: RootToCheck[] = [
    ...volumes.map((v) => ({ ref: v.name, kind: 'volume' as const, root: v.root })),
    ...snapshots.map((s) => ({ ref: s.name, kind: 'snapshot' as const, root: s.root })),
  ]
  const report: FsckReport = { volumes: volumes.length, snapshots: snapshots.length, pages: 0, inodes: 0, extents: 0, blobs: 0, segments: 0, bytesVerified: 0, problems: [], repaired: [], ok: true }

  // --- metadata: walk every root; shared subtrees are read once, problems attributed to every root that holds them.
  const badPages = new Map<string, FsckProblem>()
  const blobs = new Map<string, { ref: BlobRef; uses: BlobUse[] }>()
  /**
   * What each page already walked holds below it: its blob uses and its
   * unreadable pages. A fork or snapshot shares whole subtrees (interior
   * pages included) with its origin: meeting one again credits all of it to
   * the new root without reading it twice.
   */
  interface Subtree {
    uses: { blob: string; use: Omit<BlobUse, 'ref'> }[]
    bad: string[]
  }
  const subtrees = new Map<string, Subtree>()
  const credit = (root: RootToCheck, sub: Subtree) => {
    for (const u of sub.uses) blobs.get(u.blob)!.uses.push({ ref: root.ref, ...u.use })
    for (const id of sub.bad) {
      const bad = badPages.get(id)!
      if (!bad.refs.includes(root.ref)) bad.refs.push(root.ref)
    }
  }
  let pagesDone = 0

  const walk = async (root: RootToCheck, child: Child, range: string): Promise<Subtree> => {
    const id = isPageRef(child) ? pageId(child) : undefined
    const seen = id ? subtrees.get(id) : undefined
    if (seen) {
      credit(root, seen)
      return seen
    }
    const sub: Subtree = { uses: [], bad: [] }
    let node
    try {
      node = await repo.pages.resolve(child)
    } catch (err) {
      badPages.set(id!, { kind: 'page', detail: `metadata page ${id} (${range}) is unreadable: ${(err as Error).message}`, refs: [root.ref], ranges: [], paths: [] })
      sub.bad.push(id!)
      subtrees.set(id!, sub)
      return sub
    }
    report.pages++
    options.onProgress?.({ phase: 'metadata', done: ++pagesDone })
    if (node.leaf) {
      for (let i = 0; i < node.keys.length; i++) {
        const key = node.keys[i]
        const kind = key.charCodeAt(0)
        if (kind === KIND.inode) report.inodes++
        if (kind !== KIND.extent) continue
        report.extents++
        const ino = readU64(key, 1)
        const e = decodeExtent(readU64(key, 9), leafValue(node, i))
        const blobKey = Relocations.keyOf(e.blob.seg, e.blob.id)
        let entry = blobs.get(blobKey)
        if (!entry) blobs.set(blobKey, (entry = { ref: e.blob, uses: [] }))
        const use = { ino, start: e.off, end: e.off + e.len }
        entry.uses.push({ ref: root.ref, ...use })
        sub.uses.push({ blob: blobKey, use })
      }
    } else {
      for (let i = 0; i < node.children.length; i++) {
        const low = i === 0 ? range.split('…')[0] : describeKey(node.keys[i - 1])
        const high = i < node.keys.length ? describeKey(node.keys[i]) : range.split('…')[1]
        const below = await walk(root, node.children[i], `${low}…${high}`)
        // (A loop, not push(...below.uses): a subtree can hold more uses than a call's arguments may.)
        for (const u of below.uses) sub.uses.push(u)
        for (const id of below.bad) sub.bad.push(id)
      }
    }
    if (id) subtrees.set(id, sub)
    return sub
  }
  for (const root of roots) if (root.root) await walk(root, root.root, 'start…end')
  report.blobs = blobs.size

  // --- data: every blob's segment exists and is long enough; with readData, every blob decrypts.
  const relocations = new Relocations()
  await relocations.load(repo.store, repo.keys)
  const segmentSizes = new Map<string, number>()
  for await (const obj of listAll(repo.store, 'seg/')) segmentSizes.set(obj.key, obj.size)
  const badBlobs: { ref: BlobRef; uses: BlobUse[]; why: string }[] = []
  const blobStore = options.readData ? await repo.blobStore() : undefined
  let blobsDone = 0
  const usedSegments = new Set<string>()
  for (const { ref: named, uses } of blobs.values()) {
    options.onProgress?.({ phase: 'data', done: ++blobsDone, total: blobs.size })
    const ref = relocations.translate(named)
    const key = segmentKey(ref.seg)
    usedSegments.add(key)
    const size = segmentSizes.get(key)
    if (size === undefined) badBlobs.push({ ref, uses, why: `segment ${ref.seg} is missing` })
    else if (ref.off + ref.len > size) badBlobs.push({ ref, uses, why: `segment ${ref.seg} is truncated (${size} bytes, blob ends at ${ref.off + ref.len})` })
    else if (blobStore) {
      try {
        await blobStore.read(named)
        report.bytesVerified += ref.raw
      } catch (err) {
        badBlobs.push({ ref, uses, why: `blob in segment ${ref.seg} at ${ref.off} fails verification: ${((err as Error).cause as Error)?.message ?? (err as Error).message}` })
      }
    }
  }
  report.segments = usedSegments.size

  // --- name what is affected.
  const resolvers = new Map<string, PathResolver>()
  const pathOf = async (refName: string, ino: number): Promise<string> => {
    const root = roots.find((r) => r.ref === refName)!
    let resolver = resolvers.get(refName)
    if (!resolver) resolvers.set(refName, (resolver = new PathResolver(new Tree(repo.pages, root.root ?? undefined))))
    return (await resolver.path(ino).catch(() => undefined)) ?? `(inode ${ino}, name unreadable)`
  }
  for (const bad of badBlobs) {
    const ranges: DamagedRange[] = []
    for (const u of bad.uses) ranges.push({ ref: u.ref, path: await pathOf(u.ref, u.ino), ino: u.ino, start: u.start, end: u.end })
    report.problems.push({ kind: 'blob', detail: bad.why, refs: [...new Set(bad.uses.map((u) => u.ref))], ranges, paths: [...new Set(ranges.map((r) => `${r.ref}:${r.path}`))] })
  }
  for (const problem of badPages.values()) report.problems.push(problem)

  if (options.repair) report.repaired = await repair(repo, report, roots, options)
  const unrepaired = report.problems.some((p) => p.kind === 'page') || report.problems.some((p) => p.ranges.some((r) => !report.repaired.some((x) => x.ref === r.ref && x.ino === r.ino && x.start === r.start)))
  report.ok = report.problems.length === 0 || (options.repair === true && !unrepaired)
  return report
}

/** Punches damaged ranges out of volume files (they read as zeros) and records them in user.s0fs.damaged. */
async function repair(repo: Repository, report: FsckReport, roots: RootToCheck[], options: FsckOptions): Promise<DamagedRange[]> {
  const byVolume = new Map<string, DamagedRange[]>()
  for (const p of report.problems) {
    for (const r of p.ranges) {
      if (roots.find((x) => x.ref === r.ref)?.kind !== 'volume') continue
      byVolume.set(r.ref, [...(byVolume.get(r.ref) ?? []), r])
    }
  }
  const repaired: DamagedRange[] = []
  let done = 0
  for (const [volume, ranges] of byVolume) {
    const session = await repo.openVolume(volume, { portalDir: options.portalDir ?? '.', purpose: 's0fs fsck --repair' })
    try {
      const byIno = new Map<number, DamagedRange[]>()
      for (const r of ranges) byIno.set(r.ino, [...(byIno.get(r.ino) ?? []), r])
      for (const [ino, list] of byIno) {
        for (const r of list) {
          await session.fs.fallocate(ROOT, ino, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, r.start, r.end - r.start)
          repaired.push(r)
          options.onProgress?.({ phase: 'repair', done: ++done })
        }
        const note = list.map((r) => `${r.start}-${r.end}`).join(',')
        await session.fs.setxattr(ROOT, ino, Buffer.from('user.s0fs.damaged'), Buffer.from(`zeroed by fsck ${new Date().toISOString()}: ${note}`))
      }
      await session.close()
    } catch (err) {
      await session.abandon()
      throw err
    }
  }
  return repaired
}

/** A B+tree key in words, for reporting which part of the metadata a lost page held. */
function describeKey(key: string): string {
  const kind = key.charCodeAt(0)
  const names = ['superblock', 'inode', 'entry', 'cookie', 'extent', 'xattr', 'orphan']
  return key.length >= 9 ? `${names[kind] ?? 'key'} of inode ${readU64(key, 1)}` : names[kind] ?? 'key'
}

