import { describe, expect, it } from 'vitest'
import { timed } from '../../bench/harness.js'
import { combineRounds, median, roundRatios } from '../../bench/report.js'

describe('bench harness: running a tool', () => {
  it('names a tool that is not installed, and how to get it', () => {
    expect(() => timed('s0fs-no-such-tool', [])).toThrow(/s0fs-no-such-tool is not installed .*apt-get install s0fs-no-such-tool/)
  })

  it('reports a tool that fails with its exit status and output', () => {
    expect(() => timed('sh', ['-c', 'echo broken >&2; exit 3'])).toThrow(/sh -c .* failed \(exit 3\): broken/)
  })

  it('returns the output and the time taken of a tool that succeeds', () => {
    const r = timed('sh', ['-c', 'echo ok'])
    expect(r.stdout).toBe('ok\n')
    expect(r.seconds).toBeGreaterThan(0)
  })
})

describe('bench report: several rounds as one', () => {
  it('takes the median of each figure, the largest peak, and fails a check any round failed', () => {
    const rounds = [
      { create_files_per_s: 2900, seconds: 3.1, daemon_peak_rss_mib: 140, tree_matches: true, note: 'a' },
      { create_files_per_s: 3600, seconds: 2.7, daemon_peak_rss_mib: 152, tree_matches: false, note: 'b' },
      { create_files_per_s: 3100, seconds: 4.4, daemon_peak_rss_mib: 139, tree_matches: true, note: 'c' },
    ]
    expect(combineRounds(rounds)).toEqual({ create_files_per_s: 3100, seconds: 3.1, daemon_peak_rss_mib: 152, tree_matches: false, note: 'a' })
  })

  it('takes the median of an even count as the mean of the middle two', () => {
    expect(median([4, 1, 3, 2])).toBe(3) // 2.5 rounded: whole inputs stay whole
    expect(median([0.25, 0.5, 1, 2])).toBe(0.75)
    expect(median([7])).toBe(7)
  })

  it('pairs each round of s0fs with the same round of local disk for ratios', () => {
    // Local disk halves in speed in the second round: the per-round ratios are 0.5, 0.5, 0.5.
    const s0fs = [{ create_files_per_s: 1000 }, { create_files_per_s: 500 }, { create_files_per_s: 1000 }]
    const local = [{ create_files_per_s: 2000 }, { create_files_per_s: 1000 }, { create_files_per_s: 2000 }]
    expect(roundRatios(s0fs, local)).toEqual({ create_files_per_s: 0.5 })
  })
})
