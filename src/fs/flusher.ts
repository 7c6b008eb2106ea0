import type { BlobRef } from '../blob/index.js'
import type { Tree } from '../meta/btree.js'
import { extentsInTree, putExtentsIn, type FileSystem } from './filesystem.js'
import type { Overlay, Piece } from './overlay.js'
import { decodeInode, inodeKey, isReg, type Extent } from './records.js'

/**
 * Turns pending (logged, not yet stored) bytes into blobs.
 *
 * For each dirty file it plans regions: a small file is stored whole; in a
 * large file each dirty span grows to the edges of the extents it touches, so
 * a few changed bytes rewrite only the chunk(s) around them — or, when that
 * would store many times the changed bytes, the span alone becomes a patch.
 * It reads each region as it was (extents plus pending pieces), stores it —
 * content-defined chunks for large regions — waits until the segments are in
 * the bucket, and only then swaps the region's pending pieces for the new
 * extents — unless the file lost bytes there meanwhile (truncate, punch): the
 * region then waits for the next round. Bytes written meanwhile stay pending
 * on top of the new extents. All-zero chunks become holes.
 */

/** Files up to this size are stored as one blob. */
export const SMALL_FILE = 1024 * 1024
/**
 * Large regions are read and chunked in pieces of this size (cut points do not
 * depend on it: the tail after the last cut is carried into the next piece).
 * Smaller pieces keep both workers fed sooner and hold less in flight: a
 * 512 MiB dd, alternating three times each, ran 139–147 MB/s with a peak RSS
 * of 307–325 MiB at 8 MiB, and 142–180 MB/s at 265–278 MiB with 2 MiB.
 */
const STREAM_PIECE = 2 * 1024 * 1024
/**
 * A dirty span of a large file up to PATCH_MAX bytes whose chunks are at least
 * PATCH_GROWTH times its size is stored as a blob of its own (a patch that
 * splits the extents around it) instead of rewriting those chunks: random
 * 4 KiB writes to a 128 MiB file otherwise re-encode ~1 MiB per write, and
 * nearly the whole file at every flush. Patches give up deduplication of the
 * patched bytes against other files; a later write that covers most of a
 * patched region rewrites it whole again.
 */
const PATCH_MAX = 256 * 1024
const PATCH_GROWTH = 8
/** Small files, patches and short spans are encoded in batches of about this many bytes. */
const SMALL_BATCH = 4 * 1024 * 1024

interface Region {
  ino: number
  start: number
  end: number
  extents: Extent[]
  pieces: Piece[]
  maxSeq: number
  fingerprint: string
  /** Stored as one blob (a small file, a patch or a short span of a large one) rather than in content-defined chunks. */
  whole: boolean
  /** Filled by storing: the region's new extents. */
  result?: Extent[]
}

export interface FlushResult {
  files: number
  regions: number
  bytes: number
  skipped: number
}

export interface FlushOptions {
  /** Only these files (default: every dirty file). */
  inodes?: number[]
  /** Stop planning once this many pending bytes are selected (bounds memory); the rest waits. */
  maxBytes?: number
}

/**
 * What the stored extents map into [start, end) — the bytes a region was
 * planned over (another flush may replace them meanwhile). Clipped to the
 * region: storing a neighbouring region trims an extent both touch, which
 * changes nothing inside this one (unclipped, every patch next to another
 * was skipped and stored again at the next flush).
 */
function fingerprint(extents: Extent[], start: number, end: number): string {
  const parts: (string | number)[] = []
  for (const e of extents) {
    const from = Math.max(start, e.off)
    const to = Math.min(end, e.off + e.len)
    if (to > from) parts.push(from, to - from, e.blob.seg, e.blob.off, e.blobOff + (from - e.off))
  }
  return parts.join(',')
}

/** What planning reads: inodes and extents from a tree, pending pieces from overlays, files in an order. */
interface PendingView {
  tree: Tree
  overlays: Map<number, Overlay>
  files: Iterable<number>
}

export async function flushPending(fs: FileSystem, options: FlushOptions = {}): Promise<FlushResult> {
  let plannedAt = 0
  try {
    const regions = await fs.lock.run(() => {
      plannedAt = fs.beginFlush()
      return planRegions({ tree: fs.tree, overlays: fs.overlays, files: options.inodes ?? fs.dirty.keys() }, options)
    })
    const result = emptyResult(regions)
    if (regions.length === 0) return result
    await storeRegions(fs, regions)
    await fs.lock.run(() => applyToLive(fs, regions, plannedAt, result))
    return result
  } finally {
    fs.endFlush()
  }
}

/** A volume frozen by a commit (FileSystem.freezePending), at log position `seq`; `plannedAt` from beginFlush then. */
export interface FrozenVolume {
  tree: Tree
  overlays: Map<number, Overlay>
  seq: number
  plannedAt: number
}

/**
 * A commit's flush: stores every piece pending when the commit froze the
 * volume and puts the new extents into the frozen tree, which the commit
 * then persists. Writers are not held back meanwhile (before, a commit's
 * last pass held the lock until all that was pending was stored, and under
 * steady random writes its unlocked passes never caught up: no commit
 * completed while the writes lasted). The stored regions also go into the
 * live files where they still apply, as an ordinary flush's do
 * (`result.skipped` counts those that did not).
 *
 * Returns with `through`: the log position the frozen tree now reflects —
 * the frozen one, or the end of the extents records this flush logged if
 * nothing else was logged since freezing (those hold nothing the frozen
 * tree lacks; left uncommitted, they alone would call for another commit).
 */
export async function flushFrozen(fs: FileSystem, frozen: FrozenVolume): Promise<{ result: FlushResult; through: number }> {
  const regions = await planRegions({ tree: frozen.tree, overlays: frozen.overlays, files: frozen.overlays.keys() }, {})
  const result = emptyResult(regions)
  if (regions.length === 0) return { result, through: frozen.seq }
  await storeRegions(fs, regions)
  for (const r of regions) await putExtentsIn(frozen.tree, { ino: r.ino, start: r.start, end: r.end, extents: r.result! })
  return fs.lock.run(async () => {
    const quiet = fs.wal!.seq === frozen.seq
    await applyToLive(fs, regions, frozen.plannedAt, result)
    return { result, through: quiet ? fs.wal!.seq : frozen.seq }
  })
}

function emptyResult(regions: Region[]): FlushResult {
  return { files: new Set(regions.map((r) => r.ino)).size, regions: regions.length, bytes: 0, skipped: 0 }
}

/** Stores the regions' current contents and waits until they are in the bucket; fills each region's `result`. */
async function storeRegions(fs: FileSystem, regions: Region[]): Promise<void> {
  const read = fs.reads.begin()
  try {
    await storeSmall(fs, regions.filter((r) => r.whole))
    for (const r of regions.filter((r) => !r.whole)) await storeLarge(fs, r)
  } finally {
    fs.reads.end(read)
  }
  await fs.blobs.flush()
}

/**
 * Swaps stored regions' pending pieces for their extents in the live files
 * (under the lock). A region that no longer applies is skipped: its pieces
 * stay pending.
 */
async function applyToLive(fs: FileSystem, regions: Region[], plannedAt: number, result: FlushResult): Promise<void> {
  const stored = new Map<number, Region[]>()
  for (const r of regions) {
    if (!(await stillApplies(fs, r, plannedAt))) {
      result.skipped++
      continue
    }
    await fs.storeExtents({ ino: r.ino, start: r.start, end: r.end, maxSeq: r.maxSeq, extents: r.result! }, true)
    let list = stored.get(r.ino)
    if (!list) stored.set(r.ino, (list = []))
    list.push(r)
    result.bytes += r.end - r.start
  }
  // Each file's stored pieces are dropped in one pass (regions of a file are disjoint);
  // pieces written since planning are newer than the regions' maxSeq and stay.
  for (const [ino, list] of stored) fs.dropStored(ino, list.sort((a, b) => a.start - b.start))
}

async function planRegions(view: PendingView, options: FlushOptions): Promise<Region[]> {
  const regions: Region[] = []
  let selected = 0
  for (const ino of view.files) {
    if (options.maxBytes !== undefined && selected >= options.maxBytes) break
    const overlay = view.overlays.get(ino)
    if (!overlay || overlay.isEmpty) continue
    const raw = await view.tree.get(inodeKey(ino))
    if (!raw) continue
    const inode = decodeInode(ino, raw)
    if (!isReg(inode.mode)) continue
    // Spans stored whole as one blob each (a small file, or a patch in a large one), and spans grown to chunk edges.
    const patches: [number, number][] = []
    const spans: [number, number][] = []
    if (inode.size <= SMALL_FILE) {
      patches.push([0, inode.size])
    } else {
      const dirty: [number, number][] = []
      for (const p of overlay.pieces) {
        const last = dirty[dirty.length - 1]
        if (last && p.start <= last[1]) last[1] = Math.max(last[1], p.end)
        else dirty.push([p.start, p.end])
      }
      for (const span of dirty) {
        // Grow each span to the edges of the extents it touches, so chunks are rewritten whole,
        // unless that would store many times the changed bytes: then the span is a patch.
        const touched = await extentsInTree(view.tree, ino, span[0], span[1])
        const start = touched.length ? Math.min(span[0], touched[0].off) : span[0]
        const end = Math.min(inode.size, touched.length ? Math.max(span[1], touched[touched.length - 1].off + touched[touched.length - 1].len) : span[1])
        if (span[1] - span[0] <= PATCH_MAX && end - start >= PATCH_GROWTH * (span[1] - span[0])) patches.push([span[0], Math.min(span[1], inode.size)])
        else spans.push([start, end])
      }
      mergeSpans(spans)
      absorbPatches(patches, spans)
    }
    // A short span is one blob too: chunking it would make one chunk anyway, one worker round trip per span
    // (random writes into a file with nothing stored yet leave thousands of them).
    const planned = [
      ...patches.map(([start, end]) => ({ start, end, whole: true })),
      ...spans.map(([start, end]) => ({ start, end, whole: end - start <= PATCH_MAX })),
    ]
    for (const { start, end, whole } of planned) {
      if (end <= start) {
        // Nothing left inside the file (pending bytes beyond a later truncate are already gone).
        regions.push({ ino, start, end, extents: [], pieces: [], maxSeq: overlay.maxSeq, fingerprint: '', whole })
        continue
      }
      const extents = await extentsInTree(view.tree, ino, start, end)
      const pieces = overlay.covering(start, end)
      const maxSeq = pieces.reduce((m, p) => Math.max(m, p.loc.seq), 0)
      regions.push({ ino, start, end, extents, pieces, maxSeq, fingerprint: fingerprint(extents, start, end), whole })
      selected += pieces.reduce((n, p) => n + p.end - p.start, 0)
    }
  }
  return regions
}

/** Sorts spans and merges those that overlap or touch, in place (one pass: a file may have thousands). */
function mergeSpans(spans: [number, number][]): void {
  spans.sort((a, b) => a[0] - b[0])
  let kept = 0
  for (const span of spans) {
    const last = spans[kept - 1]
    if (last && span[0] <= last[1]) last[1] = Math.max(last[1], span[1])
    else spans[kept++] = span
  }
  spans.length = kept
}

/** A patch that overlaps a grown span is stored as part of it (both lists sorted; spans stay disjoint). */
function absorbPatches(patches: [number, number][], spans: [number, number][]): void {
  const kept: [number, number][] = []
  let k = 0
  for (const patch of patches) {
    while (k < spans.length && spans[k][1] <= patch[0]) k++
    const span = spans[k]
    if (span && span[0] < patch[1]) {
      span[0] = Math.min(span[0], patch[0])
      span[1] = Math.max(span[1], patch[1])
    } else kept.push(patch)
  }
  if (kept.length < patches.length) mergeSpans(spans)
  patches.splice(0, patches.length, ...kept)
}

/**
 * Whether a stored region can still go in: the file exists, lost no bytes
 * since planning (a truncate or punch), and its extents there are the ones
 * the region was read from. Writes made meanwhile do not stop it: their
 * pieces are newer than the region's maxSeq and stay pending on top of it.
 */
async function stillApplies(fs: FileSystem, r: Region, plannedAt: number): Promise<boolean> {
  if (!(await fs.tree.get(inodeKey(r.ino)))) return false
  if (fs.cutSince(r.ino, plannedAt)) return false
  const extents = r.end > r.start ? await fs.extentsIn(r.ino, r.start, r.end) : []
  return fingerprint(extents, r.start, r.end) === r.fingerprint
}

async function storeSmall(fs: FileSystem, regions: Region[]): Promise<void> {
  const firstSeq = (r: Region) => r.pieces.reduce((m, p) => Math.min(m, p.loc.seq), Number.MAX_SAFE_INTEGER)
  const ordered = [...regions].sort((a, b) => firstSeq(a) - firstSeq(b))
  for (let i = 0; i < ordered.length; ) {
    const batch: Region[] = []
    for (let bytes = 0; i < ordered.length && bytes < SMALL_BATCH; i++) {
      batch.push(ordered[i])
      bytes += ordered[i].end - ordered[i].start
    }
    // Assembled straight into the memory the workers encode from. All-zero files come back
    // without a ref (no blob is stored for them), and empty ones store nothing: both read as holes.
    const contents = batch.filter((region) => region.end > region.start)
    const refs = await fs.blobs.putWholeInto(
      contents.map((region) => region.end - region.start),
      (views) => fs.assembleInto(contents, views, false),
    )
    const byRegion = new Map<Region, BlobRef>()
    contents.forEach((region, k) => refs[k] && byRegion.set(region, refs[k]))
    for (const region of batch) {
      const ref = byRegion.get(region)
      region.result = ref ? [{ off: region.start, len: region.end - region.start, blob: ref, blobOff: 0 }] : []
    }
  }
}

async function storeLarge(fs: FileSystem, region: Region): Promise<void> {
  const writer = fs.blobs.chunkedWriter()
  for (let at = region.start; at < region.end; at += STREAM_PIECE) {
    const to = Math.min(region.end, at + STREAM_PIECE)
    const extents = region.extents.filter((e) => e.off < to && e.off + e.len > at)
    const pieces = region.pieces.filter((p) => p.start < to && p.end > at).map((p) => clipPiece(p, at, to))
    await writer.writeInto(to - at, (into) => fs.assembleInto([{ start: at, end: to, extents, pieces }], [into], false))
  }
  const chunks = await writer.end()
  region.result = []
  for (const c of chunks) {
    // A chunk of zeros is not stored: it reads the same as a hole.
    if (c.ref) region.result.push({ off: region.start + c.start, len: c.end - c.start, blob: c.ref, blobOff: 0 })
  }
}

function clipPiece(p: Piece, start: number, end: number): Piece {
  const s = Math.max(p.start, start)
  return { start: s, end: Math.min(p.end, end), loc: p.loc, srcOff: p.srcOff + (s - p.start) }
}
