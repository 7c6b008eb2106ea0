export { Tree, MAX_PAGE_BYTES, MIN_PAGE_BYTES } from './btree.js'
export { isPageRef, leafValue, sameRef, type Child, type Node, type PageRef } from './node.js'
export { PageStore, PackWriter, PageCorruptError, packKey, pageAad, type PageCacheStats } from './pages.js'
export { diffTrees, type KeyChange } from './diff.js'
export {
  RefStore,
  RefExistsError,
  RefNotFoundError,
  HeadConflictError,
  InvalidNameError,
  validateName,
  newVolumeId,
  type VolumeHead,
  type Snapshot,
  type Provenance,
} from './refs.js'
export { acquireLease, readLease, leaseKey, Lease, LeaseHeldError, LeaseLostError, type LeaseRecord, type LeaseOptions, type LeaseHolder } from './lease.js'
