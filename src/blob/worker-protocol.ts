/** Messages between the blob pool and its worker threads. */

interface RegionRequest {
  seq: number
  sab: SharedArrayBuffer
  /** The region [start, end) of `sab`. */
  start: number
  end: number
}

export type WorkerRequest =
  | (RegionRequest & { op: 'cuts' })
  | (RegionRequest & { op: 'encode'; ranges: [number, number][] })

export interface EncodedReply {
  id: ArrayBuffer
  sealed: ArrayBuffer
  rawLength: number
  /** Every byte is zero (callers store a hole instead). */
  zero: boolean
}

export type WorkerReply =
  | { seq: number; cuts: number[]; blobs?: undefined; error?: undefined }
  | { seq: number; blobs: EncodedReply[]; cuts?: undefined; error?: undefined }
  | { seq: number; error: string; cuts?: undefined; blobs?: undefined }
