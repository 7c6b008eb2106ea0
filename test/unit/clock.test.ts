import { afterEach, describe, expect, it, vi } from 'vitest'
import { nowTimespec } from '../../src/fs/index.js'

describe('file times', () => {
  afterEach(() => {
    vi.useRealTimers()
  })

  it('follow the wall clock when it is stepped, forward or back, with sub-millisecond precision between', () => {
    const asMs = (t: { s: number; ns: number }) => t.s * 1000 + t.ns / 1e6
    // Within 2 ms of the wall clock as read during the call: bracketed, so that this process being
    // preempted between the two readings (a loaded CI machine) cannot widen the gap.
    const before = Date.now()
    const now = asMs(nowTimespec())
    const after = Date.now()
    expect(now).toBeGreaterThanOrEqual(before - 2)
    expect(now).toBeLessThanOrEqual(after + 2)
    // Only Date moves: performance.now() stays monotonic, as it does when NTP steps the clock.
    vi.useFakeTimers({ toFake: ['Date'] })
    for (const step of [Date.now() + 3_600_000, Date.now() - 86_400_000]) {
      vi.setSystemTime(step)
      const t = nowTimespec()
      expect(Math.abs(asMs(t) - step)).toBeLessThanOrEqual(2)
      expect(t.ns).toBeGreaterThanOrEqual(0)
      expect(t.ns).toBeLessThan(1e9)
    }
  })
})
