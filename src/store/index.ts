export type { Body, ByteRange, ListOptions, ListPage, ObjectInfo, ObjectStore, PutResult, StoreCapabilities, StoreCounters } from './types.js'
export { bodyLength, joinBody } from './types.js'
export { NotFoundError, PreconditionFailedError, StoreAuthError, StoreConfigError, StoreError, StoreUnavailableError } from './errors.js'
export { MemoryStore } from './memory.js'
export { FileStore } from './file.js'
export { S3Store, type S3StoreOptions } from './s3.js'
export { FaultStore, InjectedFault, mulberry32, type FaultOptions, type FaultCounters } from './faults.js'
export { openStore, parseS3Url, type OpenStoreOptions } from './open.js'
export { DEFAULT_RETRY, backoffDelay, sleep, type RetryPolicy } from './retry.js'
export { newCounters } from './counters.js'

import type { ObjectInfo, ObjectStore } from './types.js'

/** Every object under a prefix, following pagination. */
export async function* listAll(store: ObjectStore, prefix: string): AsyncGenerator<ObjectInfo> {
  let startAfter: string | undefined
  for (;;) {
    const page = await store.listPage(prefix, { startAfter })
    yield* page.objects
    if (!page.next) return
    startAfter = page.next
  }
}

/**
 * Asks the server whether it honours conditional writes: a second
 * put-if-absent of the same key and a put-if-match with a wrong tag must both
 * be refused. Leaves nothing behind.
 */
export async function probeConditionalWrites(store: ObjectStore, probeKey: string): Promise<boolean> {
  const { PreconditionFailedError } = await import('./errors.js')
  const body = Buffer.from('s0fs conditional-write probe')
  try {
    await store.putIfAbsent(probeKey, body)
    let ifNoneMatchHonoured = false
    try {
      await store.putIfAbsent(probeKey, body)
    } catch (err) {
      if (!(err instanceof PreconditionFailedError)) throw err
      ifNoneMatchHonoured = true
    }
    let ifMatchHonoured = false
    try {
      await store.putIfMatch(probeKey, body, 'not-the-current-etag')
    } catch (err) {
      if (!(err instanceof PreconditionFailedError)) throw err
      ifMatchHonoured = true
    }
    return ifNoneMatchHonoured && ifMatchHonoured
  } finally {
    await store.deleteMany([probeKey])
  }
}
