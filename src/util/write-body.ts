import type { Writable } from 'node:stream'

/**
 * Writes a piece of a body (an HTTP response, standard output) with
 * backpressure; false once the reader has gone away, and the caller then
 * stops. Waiting for 'drain' alone would wait for ever on a closed stream.
 */
export async function writeBody(out: Writable, chunk: Buffer): Promise<boolean> {
  if (out.destroyed || out.writableEnded) return false
  if (out.write(chunk)) return true
  await new Promise<void>((resolve) => {
    const done = () => {
      out.off('drain', done)
      out.off('close', done)
      resolve()
    }
    out.on('drain', done)
    out.on('close', done)
  })
  return !out.destroyed
}
