import { Packr } from 'msgpackr'
import type { RepoKeys } from '../crypto/index.js'
import { NotFoundError, type ObjectStore } from '../store/index.js'

/**
 * The GC notice: the segments a GC run intends to delete, published before
 * it deletes anything. Deduplication is what makes deleting unreferenced
 * data dangerous — a writer may point a new file at a blob in a segment no
 * head references yet — so every writer reads the notice (when it opens,
 * and at each lease renewal), stops deduplicating against those segments,
 * commits what it placed before, and acknowledges in its lease record. GC
 * waits for every live writer's acknowledgement, marks again, and deletes
 * only what is still unreferenced. The notice stays until the next run
 * replaces it: a stale one only names segments that no longer exist.
 */

export const GC_NOTICE_KEY = 'gc/notice'

export interface GcNotice {
  id: string
  /** ms since the epoch */
  created: number
  segments: string[]
}

const packr = new Packr({ useRecords: false })

export async function readGcNotice(store: ObjectStore, keys: RepoKeys): Promise<GcNotice | undefined> {
  try {
    const sealed = await store.get(GC_NOTICE_KEY)
    return packr.unpack(keys.open('meta', sealed, GC_NOTICE_KEY, 'GC notice')) as GcNotice
  } catch (err) {
    if (err instanceof NotFoundError) return undefined
    throw err
  }
}

export async function writeGcNotice(store: ObjectStore, keys: RepoKeys, notice: GcNotice): Promise<void> {
  await store.put(GC_NOTICE_KEY, keys.seal('meta', packr.pack(notice), GC_NOTICE_KEY))
}
