import { once } from 'node:events'

let readerGone = false
let watching = false

/**
 * Writes to standard output with backpressure; false once the reader has
 * gone away (EPIPE, as with `| head`), and the caller then stops quietly,
 * as cat does when SIGPIPE ends it.
 */
export async function writeOut(chunk: Buffer): Promise<boolean> {
  if (!watching) {
    watching = true
    process.stdout.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code !== 'EPIPE' && !readerGone) throw err
      readerGone = true
    })
  }
  if (readerGone) return false
  const written = new Promise<void>((resolve) => process.stdout.write(chunk, () => resolve()))
  if (process.stdout.writableNeedDrain) await Promise.race([once(process.stdout, 'drain').catch(() => undefined), written])
  return !readerGone
}
