/**
 * A one-consumer queue of byte chunks, read as an async iterable: a producer
 * that receives data in separate messages (a control connection, an HTTP
 * body) hands it to a consumer that wants a stream. `push` resolves once the
 * consumer has taken the chunk, which is the producer's backpressure.
 */
export class ByteQueue implements AsyncIterable<Buffer> {
  private readonly items: { chunk: Buffer; taken: () => void }[] = []
  private ended = false
  private error?: Error
  private wake?: () => void

  push(chunk: Buffer): Promise<void> {
    if (this.ended || this.error) return Promise.reject(this.error ?? new Error('the stream has ended'))
    return new Promise((taken) => {
      this.items.push({ chunk, taken })
      this.wake?.()
    })
  }

  end(): void {
    this.ended = true
    this.wake?.()
  }

  /** Makes the consumer's next read throw `error`. */
  abort(error: Error): void {
    this.error ??= error
    for (const item of this.items.splice(0)) item.taken()
    this.wake?.()
  }

  async *[Symbol.asyncIterator](): AsyncIterator<Buffer> {
    for (;;) {
      if (this.error) throw this.error
      const item = this.items.shift()
      if (item) {
        item.taken()
        yield item.chunk
        continue
      }
      if (this.ended) return
      await new Promise<void>((resolve) => (this.wake = resolve))
      this.wake = undefined
    }
  }
}
