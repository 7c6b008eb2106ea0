import { ConfigError, DecryptError, KeyFileError, WrongKeyError } from '../crypto/index.js'
import { BlobReadError } from '../blob/index.js'
import { FsError, ERRNO_TEXT } from '../fs/index.js'
import { InvalidNameError, LeaseHeldError, PageCorruptError, RefExistsError, RefNotFoundError } from '../meta/index.js'
import { NoRepositoryError, RepositoryExistsError } from '../repo/index.js'
import { NotFoundError, StoreAuthError, StoreConfigError, StoreUnavailableError } from '../store/index.js'

/** Exit statuses, documented in `s0fs --help`. */
export const EXIT = {
  ok: 0,
  error: 1,
  usage: 2,
  notFound: 3,
  exists: 4,
  wrongKey: 5,
  unavailable: 6,
  busy: 7,
  damaged: 8,
} as const

export const EXIT_HELP = `Exit status:
  0  success
  1  error not covered below
  2  bad arguments (usage)
  3  not found (repository, volume, snapshot, path)
  4  already exists
  5  wrong key, or access denied by the storage
  6  storage unreachable or failing
  7  busy: another writer holds the volume
  8  damaged data detected`

/** A failure in how the command was called; printed with a hint to --help. */
export class UsageError extends Error {
  constructor(message: string) {
    super(message)
    this.name = 'UsageError'
  }
}

/** An error that carries its own exit status. */
export class CliError extends Error {
  constructor(message: string, readonly exitCode: number) {
    super(message)
    this.name = 'CliError'
  }
}

export function exitCodeFor(err: unknown): number {
  if (err instanceof CliError) return err.exitCode
  if (err instanceof UsageError || err instanceof StoreConfigError || err instanceof InvalidNameError) return EXIT.usage
  if (err instanceof FsError) {
    if (err.code === 'ENOENT') return EXIT.notFound
    if (err.code === 'EEXIST') return EXIT.exists
    if (err.code === 'EINVAL' || err.code === 'ENAMETOOLONG') return EXIT.usage
    return EXIT.error
  }
  if (err instanceof NoRepositoryError || err instanceof NotFoundError || err instanceof RefNotFoundError) return EXIT.notFound
  if (err instanceof RepositoryExistsError || err instanceof RefExistsError) return EXIT.exists
  if (err instanceof LeaseHeldError) return EXIT.busy
  if (err instanceof WrongKeyError || err instanceof KeyFileError || err instanceof StoreAuthError) return EXIT.wrongKey
  if (err instanceof StoreUnavailableError) return EXIT.unavailable
  if (err instanceof DecryptError || err instanceof PageCorruptError) return EXIT.damaged
  if (err instanceof BlobReadError) return err.cause instanceof StoreUnavailableError ? EXIT.unavailable : EXIT.damaged
  if (err instanceof ConfigError) return /MAC mismatch/.test(err.message) ? EXIT.damaged : EXIT.error
  const named = (err as { exitCode?: number }).exitCode
  return typeof named === 'number' ? named : EXIT.error
}

/** The one-line message for an error: POSIX errors read like cp's and rm's ("PATH: No such file or directory (ENOENT)"). */
export function errorMessage(err: unknown): string {
  if (err instanceof FsError) return `${err.detail ? `${err.detail}: ` : ''}${ERRNO_TEXT[err.code]} (${err.code})`
  return (err as Error).message
}
