import { createRequire } from 'node:module'
import { Worker } from 'node:worker_threads'

/**
 * Argon2id (libsodium crypto_pwhash) in a short-lived worker thread.
 *
 * Why a thread: libsodium runs as WASM, and a WASM memory can grow but never
 * shrink. Hashing with 64 MiB in the main thread would pin 64 MiB for the
 * life of the process (a mount daemon runs for days); a worker's WASM
 * instance, memory included, is freed when the worker exits.
 */
// Only import() here: eval'd worker code is a module or a script depending on the parent.
const WORKER_SOURCE = `
import('node:worker_threads').then(async ({ parentPort, workerData }) => {
  try {
    const { createRequire } = await import('node:module')
    const sodium = createRequire(workerData.modulePath)(workerData.modulePath)
    await sodium.ready
    const { passphrase, salt, ops, mem } = workerData
    parentPort.postMessage(sodium.crypto_pwhash(32, passphrase, salt, ops, mem, sodium.crypto_pwhash_ALG_ARGON2ID13))
  } catch (err) {
    parentPort.postMessage({ error: String((err && err.message) || err) })
  }
})
`

export function argon2id(passphrase: Buffer, salt: Buffer, ops: number, mem: number): Promise<Uint8Array> {
  const modulePath = createRequire(import.meta.url).resolve('libsodium-wrappers-sumo')
  return new Promise((resolve, reject) => {
    const worker = new Worker(WORKER_SOURCE, {
      eval: true,
      workerData: { modulePath, passphrase: new Uint8Array(passphrase), salt: new Uint8Array(salt), ops, mem },
    })
    worker.once('message', (reply: Uint8Array | { error: string }) => {
      if (reply instanceof Uint8Array) resolve(reply)
      else reject(new Error(`Argon2id failed: ${reply.error}`))
      void worker.terminate()
    })
    worker.once('error', reject)
    worker.once('exit', (code) => reject(new Error(`Argon2id worker exited (status ${code}) before answering`)))
  })
}
