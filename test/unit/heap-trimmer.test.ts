import { afterEach, describe, expect, it, vi } from 'vitest'
import { SERVING_NICE, startHeapTrimmer } from '../../src/mount/runtime.js'
import { garbageMade } from '../../src/util/gc-pacer.js'
import { nativeAddon } from '../../src/util/native.js'

describe('heap trimmer', () => {
  afterEach(() => {
    vi.useRealTimers()
  })

  it('trims only once the daemon has been idle long enough and holds more than the slack', () => {
    vi.useFakeTimers()
    let idle = 0
    const trim = vi.fn(() => true)
    const stop = startHeapTrimmer(() => idle, { minIdleMs: 2000, slackBytes: 0, rss: () => 0, trim })
    vi.advanceTimersByTime(5000)
    expect(trim).not.toHaveBeenCalled() // busy
    idle = 2500
    vi.advanceTimersByTime(1000)
    expect(trim).toHaveBeenCalledTimes(1)
    stop()
    vi.advanceTimersByTime(5000)
    expect(trim).toHaveBeenCalledTimes(1)
  })

  it('leaves a process alone that holds little beyond its heap and Buffers', () => {
    vi.useFakeTimers()
    const trim = vi.fn(() => true)
    const stop = startHeapTrimmer(() => 60_000, { slackBytes: 64 * 1024 ** 3, rss: () => 0, trim })
    vi.advanceTimersByTime(5000)
    expect(trim).not.toHaveBeenCalled()
    stop()
  })

  it('while busy, trims only above the memory budget, and at most every 500 ms', () => {
    vi.useFakeTimers()
    let rss = 100
    const trim = vi.fn(() => true)
    const stop = startHeapTrimmer(() => 0, { budgetBytes: 128, rss: () => rss, trim })
    vi.advanceTimersByTime(5000)
    expect(trim).not.toHaveBeenCalled() // busy, under the budget: the free memory is kept for reuse
    rss = 140
    vi.advanceTimersByTime(100)
    expect(trim).toHaveBeenCalledTimes(1)
    vi.advanceTimersByTime(400)
    expect(trim).toHaveBeenCalledTimes(1)
    vi.advanceTimersByTime(100)
    expect(trim).toHaveBeenCalledTimes(2)
    rss = 100
    vi.advanceTimersByTime(5000)
    expect(trim).toHaveBeenCalledTimes(2)
    stop()
  })

  it('the native addon sets malloc parameters, and refuses bad ones', () => {
    const addon = nativeAddon()
    if (process.env.S0FS_NATIVE === '0') return expect(addon).toBeUndefined()
    expect(addon!.tuneMalloc!(0, 32 * 1024 * 1024, 64 * 1024 * 1024)).toBe(true)
    expect(addon!.tuneMalloc!(0, -1, 0)).toBe(false)
    expect(addon!.tuneMalloc!(0, 0, 2 ** 40)).toBe(false)
  })

  it('a daemon started without the daemon flags gets an exposed gc', async () => {
    const { spawnSync } = await import('node:child_process')
    const runtime = new URL('../../src/mount/runtime.ts', import.meta.url).pathname
    const script = `const { applyDaemonRuntime } = await import(${JSON.stringify(runtime)}); const before = typeof gc; applyDaemonRuntime(); gc({ type: 'major', execution: 'async' }); console.log(before, typeof gc)`
    const r = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { encoding: 'utf8' })
    expect(r.stderr).toBe('')
    expect(r.stdout.trim()).toBe('undefined function')
  })

  it('raises the priority of the thread that answers requests, and of no other', async () => {
    const { spawnSync } = await import('node:child_process')
    const runtime = new URL('../../src/mount/runtime.ts', import.meta.url).pathname
    // Each thread's nice value is field 19 of /proc/self/task/TID/stat (after the parenthesised name).
    const script = `const fs = await import('node:fs'); const { raiseServingPriority } = await import(${JSON.stringify(runtime)});
      const raised = await raiseServingPriority()
      const nice = (tid) => Number(fs.readFileSync('/proc/self/task/' + tid + '/stat', 'utf8').split(') ')[1].split(' ')[16])
      const others = fs.readdirSync('/proc/self/task').filter((t) => Number(t) !== process.pid).map(nice)
      console.log(JSON.stringify({ raised, main: nice(process.pid), others }))`
    const r = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { encoding: 'utf8', env: { ...process.env, UV_THREADPOOL_SIZE: '4' } })
    expect(r.stderr).toBe('')
    const out = JSON.parse(r.stdout) as { raised: boolean; main: number; others: number[] }
    // The tests run as root, as the mount daemon does.
    expect(out.raised).toBe(true)
    expect(out.main).toBe(SERVING_NICE)
    // V8's platform threads and libuv's four pool threads keep the default.
    expect(out.others.length).toBeGreaterThanOrEqual(4)
    expect(out.others.every((n) => n === 0)).toBe(true)
  })

  it('the native addon releases the C heap (malloc_trim)', () => {
    const addon = nativeAddon()
    // The addon is built by `npm install`; CI has a compiler, so it must be there.
    if (process.env.S0FS_NATIVE === '0') return expect(addon).toBeUndefined()
    expect(addon).toBeDefined()
    expect(typeof addon!.trimHeap()).toBe('boolean')
  })
})

describe('garbage pacer', () => {
  it('asks for an asynchronous full collection after every 16 MiB noted, and does nothing without an exposed gc', () => {
    const g = globalThis as { gc?: unknown }
    const saved = g.gc
    try {
      delete g.gc
      expect(() => garbageMade(64 * 1024 * 1024)).not.toThrow()
      const gc = vi.fn()
      g.gc = gc
      for (let i = 0; i < 15; i++) garbageMade(1024 * 1024)
      expect(gc).not.toHaveBeenCalled()
      garbageMade(1024 * 1024)
      expect(gc).toHaveBeenCalledTimes(1)
      expect(gc).toHaveBeenCalledWith({ type: 'major', execution: 'async' })
      for (let i = 0; i < 16; i++) garbageMade(1024 * 1024)
      expect(gc).toHaveBeenCalledTimes(2)
    } finally {
      g.gc = saved
    }
  })
})
