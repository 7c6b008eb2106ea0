/**
 * A FIFO async mutex. Metadata operations hold it while they read and change
 * the tree, so each one sees and leaves a consistent state even when page
 * loads make it wait; data transfers happen outside it.
 *
 * Taken without waiting when free (nearly always: a FUSE mount's requests
 * mostly arrive one at a time); on release it passes straight to the longest
 * waiter, so no newcomer overtakes the queue.
 */
export class Mutex {
  private held = false
  private readonly waiters: (() => void)[] = []

  get locked(): boolean {
    return this.held
  }

  async run<T>(fn: () => Promise<T> | T): Promise<T> {
    if (this.held) await new Promise<void>((resolve) => this.waiters.push(resolve))
    else this.held = true
    try {
      return await fn()
    } finally {
      const next = this.waiters.shift()
      if (next) next() // still held: now by the waiter
      else this.held = false
    }
  }
}
