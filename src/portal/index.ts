export { Wal, WalCorruptError, type WalHeader, type WalLocation, type WalRecord, type WalStats } from './wal.js'
