/**
 * Reads of log data in progress (file reads and the flusher's), so that a log
 * file is deleted only after every read that could still hold a location in
 * it has ended. A single in-flight counter would do, but under steady reads
 * it is never zero and the log would never shrink; instead each read joins
 * the current generation, and `drained()` waits only for the generations
 * that began before it was called.
 */
export class ReadTracker {
  private generation = 0
  /** Reads in progress per generation. */
  private readonly active = new Map<number, number>()
  private readonly waiters: { generation: number; resolve: () => void }[] = []

  /** Marks a read as started; pass the returned token to `end`. */
  begin(): number {
    const g = this.generation
    this.active.set(g, (this.active.get(g) ?? 0) + 1)
    return g
  }

  end(token: number): void {
    const left = (this.active.get(token) ?? 1) - 1
    if (left > 0) {
      this.active.set(token, left)
      return
    }
    this.active.delete(token)
    for (let i = this.waiters.length - 1; i >= 0; i--) {
      const w = this.waiters[i]
      if (this.settled(w.generation)) {
        this.waiters.splice(i, 1)
        w.resolve()
      }
    }
  }

  /** Reads in progress, of any generation. */
  get inFlight(): number {
    let n = 0
    for (const count of this.active.values()) n += count
    return n
  }

  /** Resolves once every read begun before this call has ended (later reads are not waited for). */
  drained(): Promise<void> {
    const generation = this.generation++
    if (this.settled(generation)) return Promise.resolve()
    return new Promise((resolve) => this.waiters.push({ generation, resolve }))
  }

  private settled(generation: number): boolean {
    for (const g of this.active.keys()) if (g <= generation) return false
    return true
  }
}
