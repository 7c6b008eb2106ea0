/** Linux errno values the filesystem core returns. */
export const Errno = {
  EPERM: 1,
  ENOENT: 2,
  EIO: 5,
  E2BIG: 7,
  EBADF: 9,
  EAGAIN: 11,
  EACCES: 13,
  EBUSY: 16,
  EEXIST: 17,
  EXDEV: 18,
  ENODEV: 19,
  ENOTDIR: 20,
  EISDIR: 21,
  EINVAL: 22,
  EFBIG: 27,
  ENOSPC: 28,
  EROFS: 30,
  EMLINK: 31,
  ERANGE: 34,
  ENAMETOOLONG: 36,
  ENOSYS: 38,
  ENOTEMPTY: 39,
  ELOOP: 40,
  ENODATA: 61,
  EOVERFLOW: 75,
  EOPNOTSUPP: 95,
  ETIMEDOUT: 110,
} as const

export type ErrnoName = keyof typeof Errno

/** A POSIX failure with its errno; the FUSE adapter replies with -errno. */
export class FsError extends Error {
  readonly errno: number
  constructor(
    readonly code: ErrnoName,
    message?: string,
  ) {
    // An expected outcome (ENOENT on every negative lookup), not a bug: skip the stack trace.
    const limit = Error.stackTraceLimit
    Error.stackTraceLimit = 0
    super(message ? `${code}: ${message}` : code)
    Error.stackTraceLimit = limit
    this.name = 'FsError'
    this.errno = Errno[code]
  }
}

export function fsError(code: ErrnoName, message?: string): FsError {
  return new FsError(code, message)
}
