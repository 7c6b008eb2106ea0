/**
 * s0fs as a library: `import { Repository } from 's0fs'`.
 *
 * Open a repository (file:// or s3://), manage volumes, snapshots and forks,
 * and read and write files without a mount. The CLI is built on exactly
 * this: every `s0fs` command is a thin layer over these calls.
 *
 * ```ts
 * import { Repository } from 's0fs'
 *
 * const repo = await Repository.open('file:///srv/s0fs', { kind: 'passphrase', passphrase: 'hunter2' })
 * await repo.createVolume('agent-42')
 * const session = await repo.openVolume('agent-42', { portalDir: '/var/cache/s0fs' })
 * await session.files().write('/notes.md', Buffer.from('hello'))
 * await session.close()                        // commits, releases the lease
 * await repo.createSnapshot('agent-42', 'first')
 * console.log(await repo.diff('first', 'agent-42'))
 * await repo.close()
 * ```
 */

export {
  Repository,
  VolumeSession,
  VolumeFiles,
  RepositoryExistsError,
  NoRepositoryError,
  fsck,
  collectGarbage,
  normalizeVolumePath,
  type InitOptions,
  type RepoInfo,
  type VolumeInfo,
  type SnapshotInfo,
  type SessionOptions,
  type CommitResult,
  type VolumeDiff,
  type DiffEntry,
  type FileTree,
  type FileStat,
  type FileAttributes,
  type FileType,
  type FileChange,
  type WriteOptions,
  type ReadRange,
  type FsckOptions,
  type FsckReport,
  type GcOptions,
  type GcReport,
} from './repo/index.js'
export { createKeyFile, readKeyFile, WrongKeyError, KeyFileError, ConfigError, type Credential } from './crypto/index.js'
export { FsError, type ErrnoName } from './fs/index.js'
export { LeaseHeldError, LeaseLostError, RefExistsError, RefNotFoundError, InvalidNameError } from './meta/index.js'
export { NotFoundError, StoreUnavailableError, StoreAuthError, StoreConfigError, type ObjectStore } from './store/index.js'
export { ApiServer, type ServeOptions } from './serve/server.js'
