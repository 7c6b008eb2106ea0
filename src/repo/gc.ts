import { randomBytes } from 'node:crypto'
import { pack, unpack } from 'msgpackr'
import { indexAad, indexKey } from '../blob/index.js'
import { decodeExtent, KIND, readU64 } from '../fs/index.js'
import { isPageRef, leafValue, readLease, type Child, type PageRef } from '../meta/index.js'
import { listAll, type ObjectInfo } from '../store/index.js'
import { writeGcNotice } from './gc-notice.js'
import type { Repository } from './repository.js'

/**
 * Garbage collection: deletes segments and metadata packs that no volume
 * head, snapshot or live writer needs.
 *
 *  1. Mark: walk every volume head and snapshot (and a restored volume's
 *     replaced root while it is within the grace period); every page's pack
 *     and every extent's segment is live.
 *  2. Candidates: what is not live and older than the grace period — so a
 *     writer's objects that no commit references yet (written moments ago)
 *     are never candidates.
 *  3. Publish the candidates as the GC notice, and wait until every live
 *     writer has acknowledged it (gc-notice.ts): from then on no writer
 *     deduplicates against them, and whatever it did before is committed.
 *  4. Mark again and delete only candidates still unreferenced.
 *  5. Rewrite the blob index without the deleted segments' rows.
 *
 * A writer that does not acknowledge within `waitMs` (an older s0fs, a
 * stuck process) stops the run before anything is deleted. Deleting a volume
 * or snapshot never breaks a fork: forks reference the shared pages and
 * blobs from their own heads, so they are marked through them.
 *
 * Not done here: repacking segments that are only partly live (their blobs
 * are addressed by segment and offset from the trees, so moving them means
 * rewriting every tree that points at them). The report names how many
 * bytes that would reclaim.
 */

export interface GcOptions {
  dryRun?: boolean
  /** Objects younger than this are never deleted (default 1 hour). */
  graceMs?: number
  /** How long to wait for live writers to acknowledge the notice (default 2 minutes). */
  waitMs?: number
  onProgress?: (p: { phase: 'list' | 'mark' | 'wait' | 'delete' | 'index'; done: number; total?: number; detail?: string }) => void
}

export interface GcReport {
  dryRun: boolean
  volumes: number
  snapshots: number
  segments: { total: number; live: number; deleted: number; bytesDeleted: number; youngKept: number }
  packs: { total: number; live: number; deleted: number; bytesDeleted: number; youngKept: number }
  /** Index objects listed at the start, and what they were rewritten into. */
  indexObjects: { before: number; after: number }
  /** Bytes of dead blobs inside segments that are still partly live (a repack would free them). */
  deadBytesInLiveSegments: number
  /** Live writers that acknowledged the notice, or that held things up (then nothing was deleted). */
  writers: { volume: string; holder: string; acknowledged: boolean }[]
  objectsFreed: number
  bytesFreed: number
  aborted?: string
}

interface Marked {
  packs: Set<string>
  /** Live bytes per segment. */
  segments: Map<string, number>
  volumes: number
  snapshots: number
}

const DEFAULT_GRACE_MS = 60 * 60 * 1000
const DEFAULT_WAIT_MS = 2 * 60 * 1000

/** Everything reachable from the current heads and snapshots. */
async function mark(repo: Repository, graceMs: number, progress: GcOptions['onProgress']): Promise<Marked> {
  const volumes = await repo.refs.listVolumes()
  const snapshots = await repo.refs.listSnapshots()
  const roots: PageRef[] = []
  for (const v of volumes) {
    if (v.root) roots.push(v.root)
    // A restore keeps the replaced root reachable for the grace period (a reader may still be on it).
    if (v.previousRoot && Date.now() - Date.parse(v.updated) < graceMs) roots.push(v.previousRoot)
  }
  for (const s of snapshots) if (s.root) roots.push(s.root)
  const marked: Marked = { packs: new Set(), segments: new Map(), volumes: volumes.length, snapshots: snapshots.length }
  const seenPages = new Set<string>()
  const seenBlobs = new Set<string>()
  const visit = async (child: Child): Promise<void> => {
    if (isPageRef(child)) {
      const id = `${child.pack}:${child.off}`
      if (seenPages.has(id)) return
      seenPages.add(id)
      marked.packs.add(child.pack)
      progress?.({ phase: 'mark', done: seenPages.size })
    }
    const node = await repo.pages.resolve(child)
    if (!node.leaf) {
      for (const c of node.children) await visit(c)
      return
    }
    for (let i = 0; i < node.keys.length; i++) {
      const key = node.keys[i]
      if (key.charCodeAt(0) !== KIND.extent) continue
      const e = decodeExtent(readU64(key, 9), leafValue(node, i))
      const blobId = e.blob.id.toString('latin1') + e.blob.seg
      if (seenBlobs.has(blobId)) continue
      seenBlobs.add(blobId)
      marked.segments.set(e.blob.seg, (marked.segments.get(e.blob.seg) ?? 0) + e.blob.len)
    }
  }
  for (const root of roots) await visit(root)
  return marked
}

function segmentOf(key: string): string {
  return key.slice(key.lastIndexOf('/') + 1)
}

function packOf(key: string): string {
  return key.slice(key.lastIndexOf('/') + 1)
}

export async function collectGarbage(repo: Repository, options: GcOptions = {}): Promise<GcReport> {
  const graceMs = options.graceMs ?? DEFAULT_GRACE_MS
  const progress = options.onProgress
  const started = Date.now()

  progress?.({ phase: 'list', done: 0 })
  const segments: ObjectInfo[] = []
  const packs: ObjectInfo[] = []
  const indexes: ObjectInfo[] = []
  for await (const o of listAll(repo.store, 'seg/')) segments.push(o)
  for await (const o of listAll(repo.store, 'meta/')) packs.push(o)
  for await (const o of listAll(repo.store, 'index/')) indexes.push(o)

  const first = await mark(repo, graceMs, progress)
  // An object without a listing time is treated as young: never deleted on a guess.
  const old = (o: ObjectInfo) => o.modified !== undefined && started - o.modified >= graceMs
  const deadSegments = segments.filter((o) => !first.segments.has(segmentOf(o.key)))
  const deadPacks = packs.filter((o) => !first.packs.has(packOf(o.key)))
  const report: GcReport = {
    dryRun: options.dryRun === true,
    volumes: first.volumes,
    snapshots: first.snapshots,
    segments: { total: segments.length, live: segments.length - deadSegments.length, deleted: 0, bytesDeleted: 0, youngKept: deadSegments.filter((o) => !old(o)).length },
    packs: { total: packs.length, live: packs.length - deadPacks.length, deleted: 0, bytesDeleted: 0, youngKept: deadPacks.filter((o) => !old(o)).length },
    indexObjects: { before: indexes.length, after: indexes.length },
    deadBytesInLiveSegments: segments.filter((o) => first.segments.has(segmentOf(o.key))).reduce((n, o) => n + Math.max(0, o.size - first.segments.get(segmentOf(o.key))!), 0),
    writers: [],
    objectsFreed: 0,
    bytesFreed: 0,
  }
  let segmentCandidates = deadSegments.filter(old)
  let packCandidates = deadPacks.filter(old)
  if (options.dryRun) {
    report.segments.deleted = segmentCandidates.length
    report.segments.bytesDeleted = sum(segmentCandidates)
    report.packs.deleted = packCandidates.length
    report.packs.bytesDeleted = sum(packCandidates)
    report.objectsFreed = segmentCandidates.length + packCandidates.length
    report.bytesFreed = report.segments.bytesDeleted + report.packs.bytesDeleted
    return report
  }
  if (segmentCandidates.length === 0 && packCandidates.length === 0) return report

  // Tell the writers, and wait until each live one has acted on it.
  const notice = { id: randomBytes(12).toString('hex'), created: Date.now(), segments: segmentCandidates.map((o) => segmentOf(o.key)) }
  await writeGcNotice(repo.store, repo.keys, notice)
  const deadline = Date.now() + (options.waitMs ?? DEFAULT_WAIT_MS)
  for (;;) {
    const pending: GcReport['writers'] = []
    report.writers = []
    for (const v of await repo.refs.listVolumes()) {
      const lease = await readLease(repo.store, repo.keys, v.name)
      if (!lease || lease.record.expires <= Date.now()) continue
      const acknowledged = lease.record.gcSeen === notice.id
      const writer = { volume: v.name, holder: `${lease.record.holder.purpose} on ${lease.record.holder.host}, pid ${lease.record.holder.pid}`, acknowledged }
      report.writers.push(writer)
      if (!acknowledged) pending.push(writer)
    }
    if (pending.length === 0) break
    progress?.({ phase: 'wait', done: report.writers.length - pending.length, total: report.writers.length, detail: pending.map((p) => p.volume).join(', ') })
    if (Date.now() > deadline) {
      report.aborted = `nothing deleted: ${pending.length} live writer(s) did not acknowledge the GC notice within ${Math.round((options.waitMs ?? DEFAULT_WAIT_MS) / 1000)} s (${pending.map((p) => `${p.volume}: ${p.holder}`).join('; ')})`
      return report
    }
    await new Promise((r) => setTimeout(r, 500))
  }

  // Mark again: a writer may have committed references to candidates before it acknowledged.
  const second = await mark(repo, graceMs, progress)
  segmentCandidates = segmentCandidates.filter((o) => !second.segments.has(segmentOf(o.key)))
  packCandidates = packCandidates.filter((o) => !second.packs.has(packOf(o.key)))
  const doomed = [...segmentCandidates, ...packCandidates]
  for (let i = 0; i < doomed.length; i += 500) {
    await repo.store.deleteMany(doomed.slice(i, i + 500).map((o) => o.key))
    progress?.({ phase: 'delete', done: Math.min(doomed.length, i + 500), total: doomed.length })
  }
  report.segments.deleted = segmentCandidates.length
  report.segments.bytesDeleted = sum(segmentCandidates)
  report.packs.deleted = packCandidates.length
  report.packs.bytesDeleted = sum(packCandidates)

  // The blob index: the index objects listed at the start, rewritten without the deleted segments.
  const gone = new Set(segmentCandidates.map((o) => segmentOf(o.key)))
  if (gone.size > 0 && indexes.length > 0) {
    progress?.({ phase: 'index', done: 0, total: indexes.length })
    const kept: [string, unknown[]][] = []
    for (const o of indexes) {
      const id = o.key.slice('index/'.length)
      const body = repo.keys.open('data', await repo.store.get(o.key), indexAad(id), `index ${id}`)
      for (const [seg, rows] of unpack(body) as [string, unknown[]][]) if (!gone.has(seg)) kept.push([seg, rows])
    }
    if (kept.length > 0) {
      const id = randomBytes(16).toString('hex')
      await repo.store.put(indexKey(id), repo.keys.seal('data', pack(kept), indexAad(id)))
    }
    await repo.store.deleteMany(indexes.map((o) => o.key))
    report.indexObjects.after = kept.length > 0 ? 1 : 0
  }
  report.objectsFreed = doomed.length
  report.bytesFreed = report.segments.bytesDeleted + report.packs.bytesDeleted
  return report
}

function sum(objects: ObjectInfo[]): number {
  return objects.reduce((n, o) => n + o.size, 0)
}

