export {
  Repository,
  RepositoryExistsError,
  NoRepositoryError,
  CONFIG_KEY,
  writerGuarantee,
  type InitOptions,
  type RepoInfo,
  type VolumeInfo,
  type SnapshotInfo,
} from './repository.js'
export { VolumeSession, type SessionOptions, type CommitResult, type RecoveryReport } from './session.js'
export { diffRoots, type VolumeDiff, type DiffEntry } from './diff.js'
export { VolumeFiles, fileType, type FileTree, type FileStat, type FileAttributes, type FileType, type FileChange, type WriteOptions, type ReadRange, type VolumeFilesOptions } from './files.js'
export { normalizeVolumePath, volumePathComponents, volumePathWithin, joinVolumePath, resolveSymlinks } from './paths.js'
export { fsck, type FsckOptions, type FsckReport, type FsckProblem, type DamagedRange } from './fsck.js'
export { collectGarbage, type GcOptions, type GcReport } from './gc.js'
export { readGcNotice, GC_NOTICE_KEY, type GcNotice } from './gc-notice.js'
