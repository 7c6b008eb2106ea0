/**
 * A FIFO async mutex. Metadata operations hold it while they read and change
 * the tree, so each one sees and leaves a consistent state even when page
 * loads make it wait; data transfers happen outside it.
 */
export class Mutex {
  private tail: Promise<void> = Promise.resolve()
  private held = false

  get locked(): boolean {
    return this.held
  }

  async run<T>(fn: () => Promise<T> | T): Promise<T> {
    const previous = this.tail
    let release!: () => void
    this.tail = new Promise<void>((resolve) => (release = resolve))
    await previous
    this.held = true
    try {
      return await fn()
    } finally {
      this.held = false
      release()
    }
  }
}
