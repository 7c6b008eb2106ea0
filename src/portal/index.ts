export { Wal, WalCorruptError, type WalHeader, type WalLocation, type WalRecord, type WalStats } from './wal.js'
export { SegmentCache, type SegmentCacheStats } from './segment-cache.js'
export { Portal, type PortalOptions } from './portal.js'
