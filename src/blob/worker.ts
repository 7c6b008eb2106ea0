/**
 * Blob worker thread: finds chunk boundaries and encodes chunks (keyed hash,
 * zstd, AES-GCM) off the main thread. Input regions arrive in
 * SharedArrayBuffers, so neither phase copies them; sealed blobs travel back
 * as transferred ArrayBuffers.
 */
import { parentPort, workerData } from 'node:worker_threads'
import { RepoKeys } from '../crypto/keys.js'
import { createChunker, gearTable } from './chunker.js'
import { encodeBlob, isAllZero } from './codec.js'
import type { BlobWorkerInit } from './pool.js'
import type { WorkerReply, WorkerRequest } from './worker-protocol.js'

const init = workerData as BlobWorkerInit
const keys = new RepoKeys(Buffer.from(init.master), init.repoId)
const chunker = createChunker(init.chunking, gearTable(keys.key('chunker')))

parentPort!.on('message', (req: WorkerRequest) => {
  try {
    const region = Buffer.from(req.sab, req.start, req.end - req.start)
    if (req.op === 'cuts') {
      const cuts = chunker.cuts(region).map((c) => c + req.start)
      const reply: WorkerReply = { seq: req.seq, cuts }
      parentPort!.postMessage(reply)
      return
    }
    const blobs = req.ranges.map(([s, e]) => {
      const data = region.subarray(s - req.start, e - req.start)
      if (isAllZero(data)) return { id: new ArrayBuffer(0), sealed: new ArrayBuffer(0), rawLength: data.length, zero: true }
      const blob = encodeBlob(keys, data, { frames: init.frames })
      return { id: toArrayBuffer(blob.id), sealed: toArrayBuffer(blob.sealed), rawLength: blob.rawLength, zero: false }
    })
    const reply: WorkerReply = { seq: req.seq, blobs }
    parentPort!.postMessage(reply, blobs.map((b) => b.sealed))
  } catch (err) {
    const reply: WorkerReply = { seq: req.seq, error: (err as Error).stack ?? String(err) }
    parentPort!.postMessage(reply)
  }
})

function toArrayBuffer(buf: Buffer): ArrayBuffer {
  // Small Buffers share Node's pool slab; copy to a private ArrayBuffer we can transfer.
  const out = new ArrayBuffer(buf.length)
  new Uint8Array(out).set(buf)
  return out
}
