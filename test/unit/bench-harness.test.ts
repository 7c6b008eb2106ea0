import { describe, expect, it } from 'vitest'
import { timed } from '../../bench/harness.js'

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
