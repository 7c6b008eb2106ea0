/**
 * Store failures, each a distinct class so callers branch on `instanceof`
 * rather than on message text. Messages name the object and the backend but
 * never credentials.
 */

export class StoreError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options)
    this.name = new.target.name
  }
}

/** The object does not exist. */
export class NotFoundError extends StoreError {
  constructor(readonly key: string) {
    super(`object not found: ${key}`)
  }
}

/** A conditional write lost: the object exists (put-if-absent) or changed (put-if-match). */
export class PreconditionFailedError extends StoreError {
  constructor(readonly key: string, detail = 'precondition failed') {
    super(`${detail}: ${key}`)
  }
}

/** The backend cannot be reached or keeps failing after retries. */
export class StoreUnavailableError extends StoreError {}

/** The backend refused our credentials or permissions. */
export class StoreAuthError extends StoreError {}

/** The repository URL or backend options are invalid. */
export class StoreConfigError extends StoreError {}
