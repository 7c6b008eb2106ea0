import { writeBody } from '../util/write-body.js'

let readerGone = false
let watching = false

/**
 * Makes a reader that goes away (EPIPE, as with `| head`) end this
 * process's output quietly, as SIGPIPE ends cat's, instead of an unhandled
 * 'error' event. The `s0fs` entry point calls it first; writeOut too.
 */
export function watchStdout(): void {
  if (watching) return
  watching = true
  process.stdout.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code !== 'EPIPE' && !readerGone) throw err
    readerGone = true
  })
}

/**
 * Writes to standard output with backpressure; false once the reader has
 * gone away, and the caller then stops quietly.
 */
export async function writeOut(chunk: Buffer): Promise<boolean> {
  watchStdout()
  return !readerGone && (await writeBody(process.stdout, chunk)) && !readerGone
}
