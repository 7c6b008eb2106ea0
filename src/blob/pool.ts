import { availableParallelism } from 'node:os'
import { Worker } from 'node:worker_threads'
import type { ChunkParams } from './chunker.js'
import type { EncodedReply, WorkerReply, WorkerRequest } from './worker-protocol.js'

export interface EncodedChunk {
  id: Buffer
  sealed: Buffer
  rawLength: number
  zero: boolean
  /**
   * The buffer `sealed` is a view of when it holds a whole batch's blobs (the
   * native encoder): the blob store frees it once every segment holding one
   * of them is stored.
   */
  arena?: Buffer
}

/** Encodes ranges of a shared buffer as blobs, off the calling thread. */
export interface BlobEncoder {
  /** Encodes each range of sab[start, end) as one blob (ranges are absolute offsets into sab). */
  encode(sab: ArrayBufferLike, start: number, end: number, ranges: [number, number][]): Promise<EncodedChunk[]>
}

interface Pending {
  resolve: (reply: WorkerReply) => void
  reject: (err: Error) => void
}

interface Slot {
  worker: Worker
  busy: number
  pending: Map<number, Pending>
}

/**
 * Built files run the worker as plain JS. Source files (under vitest or tsx)
 * have no loader inside a worker thread, so a tiny bootstrap registers tsx's
 * ESM hooks first (tsx is a dev dependency; it never runs in production).
 */
function workerSource(): { source: string | URL; eval: boolean } {
  const here = import.meta.url
  if (!here.endsWith('.ts')) return { source: new URL('./worker.js', here), eval: false }
  const target = JSON.stringify(new URL('./worker.ts', here).href)
  return { source: `import('tsx/esm/api').then((tsx) => { tsx.register(); return import(${target}) })`, eval: true }
}

/** Young-generation size of each worker's heap: workers hold little on it (data lives in shared and external buffers). */
const WORKER_YOUNG_GENERATION_MB = 4

/** What each worker is started with: the repository's keys, chunking and blob encoding. */
export interface BlobWorkerInit {
  master: Uint8Array
  repoId: string
  chunking: ChunkParams
  /** See BlobStoreOptions.frames. */
  frames?: boolean
}

/**
 * A fixed set of blob worker threads, started on first use. Requests go to
 * the least-busy worker; idle workers do not keep the process alive.
 */
export class BlobWorkerPool implements BlobEncoder {
  private readonly slots: Slot[] = []
  private seq = 0
  private closed = false

  constructor(
    private readonly init: BlobWorkerInit,
    readonly size = Math.max(1, Math.min(4, availableParallelism())),
  ) {}

  /** Cut points for sab[start, end). */
  async cuts(sab: SharedArrayBuffer, start: number, end: number): Promise<number[]> {
    const reply = await this.request({ op: 'cuts', seq: 0, sab, start, end })
    return reply.cuts!
  }

  /** Encodes each range of sab[start, end) as one blob. */
  async encode(sab: SharedArrayBuffer, start: number, end: number, ranges: [number, number][]): Promise<EncodedChunk[]> {
    const reply = await this.request({ op: 'encode', seq: 0, sab, start, end, ranges })
    return reply.blobs!.map((b: EncodedReply) => ({ id: Buffer.from(b.id), sealed: Buffer.from(b.sealed), rawLength: b.rawLength, zero: b.zero }))
  }

  async close(): Promise<void> {
    this.closed = true
    await Promise.all(this.slots.map((s) => s.worker.terminate()))
  }

  private request(req: WorkerRequest): Promise<WorkerReply> {
    if (this.closed) return Promise.reject(new Error('blob worker pool is closed'))
    // Workers start on first use: readers never pay for them.
    while (this.slots.length < this.size) this.slots.push(this.spawn())
    const slot = this.slots.reduce((a, b) => (b.busy < a.busy ? b : a))
    req.seq = ++this.seq
    return new Promise<WorkerReply>((resolve, reject) => {
      if (slot.busy++ === 0) slot.worker.ref()
      slot.pending.set(req.seq, { resolve, reject })
      slot.worker.postMessage(req)
    })
  }

  private spawn(): Slot {
    const { source, eval: isEval } = workerSource()
    const worker = new Worker(source, {
      eval: isEval,
      workerData: { ...this.init, master: new Uint8Array(this.init.master) },
      // A small young generation keeps each thread's RSS down.
      resourceLimits: { maxYoungGenerationSizeMb: WORKER_YOUNG_GENERATION_MB },
    })
    const slot: Slot = { worker, busy: 0, pending: new Map() }
    worker.unref()
    worker.on('message', (reply: WorkerReply) => {
      const pending = slot.pending.get(reply.seq)
      if (!pending) return
      slot.pending.delete(reply.seq)
      if (--slot.busy === 0) worker.unref()
      if (reply.error) pending.reject(new Error(`blob worker failed: ${reply.error}`))
      else pending.resolve(reply)
    })
    const fail = (err: Error) => {
      for (const p of slot.pending.values()) p.reject(err)
      slot.pending.clear()
      slot.busy = 0
      if (!this.closed) {
        // Replace the dead worker so later requests still have somewhere to go.
        const index = this.slots.indexOf(slot)
        if (index >= 0) this.slots[index] = this.spawn()
      }
    }
    worker.on('error', (err) => fail(err))
    worker.on('exit', (code) => {
      if (!this.closed && slot.pending.size > 0) fail(new Error(`blob worker exited with code ${code}`))
    })
    return slot
  }
}
