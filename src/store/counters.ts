import type { StoreCounters } from './types.js'

export function newCounters(): StoreCounters {
  return { get: 0, put: 0, head: 0, list: 0, delete: 0, bytesIn: 0, bytesOut: 0, retries: 0, errors: 0 }
}

/** Keys are relative paths; reject anything that could escape a directory or confuse a listing. */
export function assertValidKey(key: string): void {
  if (
    key.length === 0 ||
    key.length > 900 ||
    key.startsWith('/') ||
    key.endsWith('/') ||
    !/^[A-Za-z0-9._\-/]+$/.test(key) ||
    // No empty, relative or hidden components: backends keep private files under dot-names.
    key.split('/').some((part) => part === '' || part.startsWith('.'))
  ) {
    throw new Error(`invalid object key: ${JSON.stringify(key)}`)
  }
}

/** Applies a byte range to a whole object held in memory, clamping like S3 does. */
export function sliceRange(data: Buffer, range?: { start: number; end?: number }): Buffer {
  if (!range) return data
  const end = range.end === undefined ? data.length : Math.min(range.end, data.length)
  if (range.start < 0 || range.start > end) throw new RangeError(`invalid range ${range.start}-${range.end}`)
  return data.subarray(range.start, end)
}
