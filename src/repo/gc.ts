import { randomBytes } from 'node:crypto'
import { pack, unpack } from 'msgpackr'
import { indexAad, indexKey, Relocations, SegmentBuilder, segmentKey, type BlobRef } from '../blob/index.js'
import { decodeExtent, KIND, readU64 } from '../fs/index.js'
import { isPageRef, leafValue, readLease, type Child, type PageRef } from '../meta/index.js'
import { listAll, type ObjectInfo } from '../store/index.js'
import { crashPoint } from '../util/crash-points.js'
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
 *  4. Mark again. Repack: the live blobs of segments that are mostly dead
 *     (live bytes under `repackBelow` of their size, and at least 1 MiB
 *     dead) are copied into new
 *     segments and the moves recorded (blob/relocations.ts); then delete the
 *     dead candidates and the repacked segments.
 *  5. Rewrite the blob index without the deleted segments' rows, with the
 *     moved blobs' new places.
 *
 * A writer that does not acknowledge within `waitMs` (an older s0fs, a
 * stuck process) stops the run before anything is deleted. Deleting a volume
 * or snapshot never breaks a fork: forks reference the shared pages and
 * blobs from their own heads, so they are marked through them.
 */

export interface GcOptions {
  dryRun?: boolean
  /** Objects younger than this are never deleted (default 1 hour). */
  graceMs?: number
  /** How long to wait for live writers to acknowledge the notice (default 2 minutes). */
  waitMs?: number
  /** Repack segments whose live bytes are under this fraction of their size (default 0.5; 0 turns repacking off). */
  repackBelow?: number
  onProgress?: (p: { phase: 'list' | 'mark' | 'wait' | 'repack' | 'delete' | 'index'; done: number; total?: number; detail?: string }) => void
}

export interface GcReport {
  dryRun: boolean
  volumes: number
  snapshots: number
  segments: { total: number; live: number; deleted: number; bytesDeleted: number; youngKept: number }
  packs: { total: number; live: number; deleted: number; bytesDeleted: number; youngKept: number }
  /** Sparse segments whose live blobs were copied into new segments (then deleted). */
  repacked: { segments: number; blobs: number; bytesCopied: number; bytesFreed: number }
  /** Index objects listed at the start, and what they were rewritten into. */
  indexObjects: { before: number; after: number }
  /** Bytes of unreferenced blobs left inside partly live segments (above the repack threshold). */
  deadBytesInLiveSegments: number
  /** Live writers that acknowledged the notice, or that held things up (then nothing was deleted). */
  writers: { volume: string; holder: string; acknowledged: boolean }[]
  objectsFreed: number
  bytesFreed: number
  aborted?: string
}

interface Marked {
  packs: Set<string>
  /** Live blobs per segment (current locations, after relocations), by blob ID. */
  segments: Map<string, Map<string, BlobRef>>
  /** Every (segment, blob ID) a tree names, before relocation: the relocations still needed. */
  named: Set<string>
  volumes: number
  snapshots: number
}

const DEFAULT_GRACE_MS = 60 * 60 * 1000
const DEFAULT_WAIT_MS = 2 * 60 * 1000
const DEFAULT_REPACK_BELOW = 0.5
const REPACK_SEGMENT_BYTES = 8 * 1024 * 1024
/**
 * A segment is repacked only when this much of it is dead, whatever the
 * fraction: a small segment's own index and trailer would otherwise make it
 * look sparse, and it would be copied again at every run.
 */
const REPACK_MIN_DEAD_BYTES = 1024 * 1024

/** Everything reachable from the current heads and snapshots. */
async function mark(repo: Repository, relocations: Relocations, graceMs: number, progress: GcOptions['onProgress']): Promise<Marked> {
  const volumes = await repo.refs.listVolumes()
  const snapshots = await repo.refs.listSnapshots()
  const roots: PageRef[] = []
  for (const v of volumes) {
    if (v.root) roots.push(v.root)
    // A restore keeps the replaced root reachable for the grace period (a reader may still be on it).
    if (v.previousRoot && Date.now() - Date.parse(v.updated) < graceMs) roots.push(v.previousRoot)
  }
  for (const s of snapshots) if (s.root) roots.push(s.root)
  const marked: Marked = { packs: new Set(), segments: new Map(), named: new Set(), volumes: volumes.length, snapshots: snapshots.length }
  const seenPages = new Set<string>()
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
      const named = Relocations.keyOf(e.blob.seg, e.blob.id)
      if (marked.named.has(named)) continue
      marked.named.add(named)
      const at = relocations.translate(e.blob)
      let live = marked.segments.get(at.seg)
      if (!live) marked.segments.set(at.seg, (live = new Map()))
      live.set(at.id.toString('hex'), at)
    }
  }
  for (const root of roots) await visit(root)
  return marked
}

function liveBytes(live: Map<string, BlobRef> | undefined): number {
  let n = 0
  for (const r of live?.values() ?? []) n += r.len
  return n
}

function segmentOf(key: string): string {
  return key.slice(key.lastIndexOf('/') + 1)
}

function packOf(key: string): string {
  return key.slice(key.lastIndexOf('/') + 1)
}

export async function collectGarbage(repo: Repository, options: GcOptions = {}): Promise<GcReport> {
  const graceMs = options.graceMs ?? DEFAULT_GRACE_MS
  const repackBelow = options.repackBelow ?? DEFAULT_REPACK_BELOW
  const progress = options.onProgress
  const started = Date.now()

  progress?.({ phase: 'list', done: 0 })
  const segments: ObjectInfo[] = []
  const packs: ObjectInfo[] = []
  // The index first: a writer uploads a segment before the index object naming it, so every
  // segment an index object listed now names is in the segment listing that follows — unless deleted.
  const indexes = await readIndexObjects(repo)
  for await (const o of listAll(repo.store, 'seg/')) segments.push(o)
  for await (const o of listAll(repo.store, 'meta/')) packs.push(o)
  const existing = new Set(segments.map((o) => segmentOf(o.key)))
  // Rows naming segments that are gone (an earlier run stopped before it rewrote the index): never deduplicate against them.
  const stale = new Set(indexes.flatMap((x) => x.rows.map(([seg]) => seg)).filter((seg) => !existing.has(seg)))
  const relocations = new Relocations()
  const relocationObjects = await relocations.load(repo.store, repo.keys)

  const first = await mark(repo, relocations, graceMs, progress)
  // An object without a listing time is treated as young: never deleted on a guess.
  const old = (o: ObjectInfo) => o.modified !== undefined && started - o.modified >= graceMs
  const deadSegments = segments.filter((o) => !first.segments.has(segmentOf(o.key)))
  const deadPacks = packs.filter((o) => !first.packs.has(packOf(o.key)))
  const sparse = (m: Marked) => (o: ObjectInfo) => {
    const live = m.segments.get(segmentOf(o.key))
    if (!live) return false
    const bytes = liveBytes(live)
    return bytes < o.size * repackBelow && o.size - bytes >= REPACK_MIN_DEAD_BYTES
  }
  const report: GcReport = {
    dryRun: options.dryRun === true,
    volumes: first.volumes,
    snapshots: first.snapshots,
    segments: { total: segments.length, live: segments.length - deadSegments.length, deleted: 0, bytesDeleted: 0, youngKept: deadSegments.filter((o) => !old(o)).length },
    packs: { total: packs.length, live: packs.length - deadPacks.length, deleted: 0, bytesDeleted: 0, youngKept: deadPacks.filter((o) => !old(o)).length },
    repacked: { segments: 0, blobs: 0, bytesCopied: 0, bytesFreed: 0 },
    indexObjects: { before: indexes.length, after: indexes.length },
    deadBytesInLiveSegments: 0,
    writers: [],
    objectsFreed: 0,
    bytesFreed: 0,
  }
  let segmentCandidates = deadSegments.filter(old)
  let packCandidates = deadPacks.filter(old)
  let repackCandidates = segments.filter((o) => old(o) && sparse(first)(o))
  if (options.dryRun) {
    report.segments.deleted = segmentCandidates.length
    report.segments.bytesDeleted = sum(segmentCandidates)
    report.packs.deleted = packCandidates.length
    report.packs.bytesDeleted = sum(packCandidates)
    report.repacked.segments = repackCandidates.length
    report.repacked.bytesCopied = repackCandidates.reduce((n, o) => n + liveBytes(first.segments.get(segmentOf(o.key))), 0)
    report.repacked.bytesFreed = sum(repackCandidates) - report.repacked.bytesCopied
    report.deadBytesInLiveSegments = deadBytesIn(segments, first, repackCandidates)
    report.objectsFreed = segmentCandidates.length + packCandidates.length + repackCandidates.length
    report.bytesFreed = report.segments.bytesDeleted + report.packs.bytesDeleted + report.repacked.bytesFreed
    return report
  }
  if (segmentCandidates.length + packCandidates.length + repackCandidates.length + stale.size === 0) {
    report.deadBytesInLiveSegments = deadBytesIn(segments, first, [])
    return report
  }

  // Tell the writers, and wait until each live one has acted on it.
  const condemned = [...segmentCandidates, ...repackCandidates].map((o) => segmentOf(o.key)).concat([...stale])
  const notice = { id: randomBytes(12).toString('hex'), created: Date.now(), segments: condemned }
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
  const second = await mark(repo, relocations, graceMs, progress)
  segmentCandidates = segmentCandidates.filter((o) => !second.segments.has(segmentOf(o.key)))
  packCandidates = packCandidates.filter((o) => !second.packs.has(packOf(o.key)))
  repackCandidates = repackCandidates.filter((o) => second.segments.has(segmentOf(o.key)))

  // Repack: copy the live blobs of sparse segments into new ones, record the moves, then the old ones can go.
  const newRefs: BlobRef[] = []
  const repacked: ObjectInfo[] = []
  if (repackCandidates.length > 0) {
    let builder = new SegmentBuilder()
    const upload = async () => {
      if (builder.blobCount === 0) return
      await repo.store.put(segmentKey(builder.id), builder.finish(repo.keys))
      newRefs.push(...builder.blobs)
      builder = new SegmentBuilder()
    }
    for (const [i, o] of repackCandidates.entries()) {
      progress?.({ phase: 'repack', done: i, total: repackCandidates.length })
      const seg = segmentOf(o.key)
      let data: Buffer
      try {
        data = await repo.store.get(o.key)
      } catch {
        continue // unreadable: leave it for fsck to report, never half-move it
      }
      for (const ref of second.segments.get(seg)!.values()) {
        if (ref.off + ref.len > data.length) continue
        const moved = builder.add(ref.id, Buffer.from(data.subarray(ref.off, ref.off + ref.len)), ref.raw)
        relocations.add(ref, moved)
        report.repacked.blobs++
        report.repacked.bytesCopied += ref.len
        if (builder.byteLength >= REPACK_SEGMENT_BYTES) await upload()
      }
      repacked.push(o)
    }
    await upload()
    report.repacked.segments = repacked.length
    report.repacked.bytesFreed = sum(repacked) - report.repacked.bytesCopied
  }
  // The relocations still needed (old locations some tree names), in one object, before anything is deleted.
  if (repacked.length > 0 || relocationObjects.length > 0) {
    const kept = relocations.compacted(second.named)
    const written = await Relocations.write(repo.store, repo.keys, kept)
    await repo.store.deleteMany(relocationObjects.filter((k) => k !== written))
  }

  const doomed = [...segmentCandidates, ...repacked, ...packCandidates]
  crashPoint('gc-before-delete')
  for (let i = 0; i < doomed.length; i += 500) {
    await repo.store.deleteMany(doomed.slice(i, i + 500).map((o) => o.key))
    progress?.({ phase: 'delete', done: Math.min(doomed.length, i + 500), total: doomed.length })
  }
  report.segments.deleted = segmentCandidates.length
  report.segments.bytesDeleted = sum(segmentCandidates)
  report.packs.deleted = packCandidates.length
  report.packs.bytesDeleted = sum(packCandidates)
  report.deadBytesInLiveSegments = deadBytesIn(segments, second, repacked)

  crashPoint('gc-before-index')

  // The blob index: the index objects read at the start, rewritten without the deleted (or already missing)
  // segments and with the moved blobs.
  const gone = new Set([...segmentCandidates, ...repacked].map((o) => segmentOf(o.key)).concat([...stale]))
  if (gone.size > 0) {
    progress?.({ phase: 'index', done: 0, total: indexes.length })
    const kept: [string, unknown[]][] = []
    for (const x of indexes) for (const [seg, rows] of x.rows) if (!gone.has(seg)) kept.push([seg, rows])
    const bySegment = new Map<string, [Buffer, number, number, number][]>()
    for (const r of newRefs) {
      if (!bySegment.has(r.seg)) bySegment.set(r.seg, [])
      bySegment.get(r.seg)!.push([r.id, r.off, r.len, r.raw])
    }
    kept.push(...bySegment)
    if (kept.length > 0) {
      const id = randomBytes(16).toString('hex')
      await repo.store.put(indexKey(id), repo.keys.seal('data', pack(kept), indexAad(id)))
    }
    await repo.store.deleteMany(indexes.map((x) => x.key))
    report.indexObjects.after = kept.length > 0 ? 1 : 0
  }
  report.objectsFreed = doomed.length
  report.bytesFreed = report.segments.bytesDeleted + report.packs.bytesDeleted + report.repacked.bytesFreed
  return report
}

/** Bytes of unreferenced blobs left inside segments that stay. */
function deadBytesIn(segments: ObjectInfo[], m: Marked, leaving: ObjectInfo[]): number {
  const gone = new Set(leaving.map((o) => o.key))
  return segments.filter((o) => m.segments.has(segmentOf(o.key)) && !gone.has(o.key)).reduce((n, o) => n + Math.max(0, o.size - liveBytes(m.segments.get(segmentOf(o.key)))), 0)
}

/** Every index object: its key and its rows, grouped by segment. */
async function readIndexObjects(repo: Repository): Promise<{ key: string; rows: [string, unknown[]][] }[]> {
  const out: { key: string; rows: [string, unknown[]][] }[] = []
  for await (const o of listAll(repo.store, 'index/')) {
    const id = o.key.slice('index/'.length)
    const body = repo.keys.open('data', await repo.store.get(o.key), indexAad(id), `index ${id}`)
    out.push({ key: o.key, rows: unpack(body) as [string, unknown[]][] })
  }
  return out
}

function sum(objects: ObjectInfo[]): number {
  return objects.reduce((n, o) => n + o.size, 0)
}

