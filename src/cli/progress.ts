import { formatBytes } from './format.js'

/** One status line rewritten in place on a terminal; plain lines otherwise. */
export class ProgressLine {
  private shown = false
  constructor(private readonly stream: NodeJS.WriteStream) {}
  update(text: string): void {
    if (this.stream.isTTY) {
      this.stream.write(`\r\x1b[K${text.slice(0, (this.stream.columns || 100) - 1)}`)
      this.shown = true
    } else this.stream.write(text + '\n')
  }
  line(text: string): void {
    this.done()
    this.stream.write(text + '\n')
  }
  done(): void {
    if (this.shown) this.stream.write('\r\x1b[K')
    this.shown = false
  }
}

const BAR_WIDTH = 24
/** A plain line (no terminal) at most this often, and only once an operation has run this long. */
const PLAIN_EVERY_MS = 5_000

/** Progress of a copy (put/get): files and bytes so far, of a total when known. */
export class TransferProgress {
  files = 0
  bytes = 0
  private readonly started = Date.now()
  private readonly status: ThrottledStatus

  constructor(
    private readonly stream: NodeJS.WriteStream,
    private readonly verb: string,
    private readonly total?: { files: number; bytes: number },
  ) {
    this.status = new ThrottledStatus(stream)
  }

  add(bytes: number, files = 0): void {
    this.bytes += bytes
    this.files += files
    this.status.update(() => this.text())
  }

  /**
   * Passes `source` through, counting its bytes as the consumer takes them.
   * (A 'data' listener would switch a stream into flowing mode and hand
   * chunks to the counter alone while the consumer is not yet reading.)
   */
  async *count<T extends Uint8Array>(source: AsyncIterable<T>): AsyncGenerator<T> {
    for await (const chunk of source) {
      this.add(chunk.length)
      yield chunk
    }
  }

  done(): void {
    this.status.done()
  }

  private text(): string {
    const seconds = Math.max((Date.now() - this.started) / 1000, 0.001)
    const rate = `${formatBytes(this.bytes / seconds)}/s`
    if (!this.total || this.total.bytes === 0) return `${this.verb} ${this.files} files, ${formatBytes(this.bytes)} (${rate})`
    const fraction = Math.min(1, this.bytes / this.total.bytes)
    const bar = this.stream.isTTY ? `[${'#'.repeat(Math.round(fraction * BAR_WIDTH)).padEnd(BAR_WIDTH, '.')}] ` : ''
    return `${bar}${this.verb} ${(fraction * 100).toFixed(0)}%  ${formatBytes(this.bytes)} of ${formatBytes(this.total.bytes)}, ${this.files}/${this.total.files} files (${rate})`
  }
}

/**
 * A status line for a long operation: on a terminal redrawn at most 10 times
 * a second; otherwise a plain line every 5 s, and nothing for an operation
 * shorter than that.
 */
export class ThrottledStatus {
  private last = Date.now()
  private readonly line: ProgressLine
  constructor(private readonly stream: NodeJS.WriteStream) {
    this.line = new ProgressLine(stream)
  }
  update(text: () => string): void {
    const now = Date.now()
    if (now - this.last < (this.stream.isTTY ? 100 : PLAIN_EVERY_MS)) return
    this.last = now
    this.line.update(text())
  }
  done(): void {
    this.line.done()
  }
}
