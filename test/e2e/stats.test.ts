import path from 'node:path'
import { describe, expect, it } from 'vitest'
import { controlRequest } from '../../src/mount/control.js'
import { runCli } from '../helpers/cli.js'
import { mountVolume, mustSh, sh, useBackend } from '../helpers/mount.js'

/** `s0fs stats` and the daemon's Prometheus endpoint report numbers that move under a workload. */

function sample(text: string, name: string, labels: string): number {
  const line = text.split('\n').find((l) => l.startsWith(`${name}{`) && l.includes(labels))
  return line ? Number(line.slice(line.lastIndexOf(' ') + 1)) : 0
}

describe('observability', () => {
  const ctx = useBackend()

  it('the metrics endpoint and s0fs stats move with the workload', async () => {
    const m = ctx.track(await mountVolume(ctx.backend, { volume: 'watched', args: ['--metrics', '127.0.0.1:0'] }))
    const status = await controlRequest(m.socket, { op: 'status' })
    const url = status.metricsUrl as string
    expect(url).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/metrics$/)

    const before = await (await fetch(url)).text()
    expect(before).toMatch(/# TYPE s0fs_fuse_requests_total counter/)
    await mustSh(`for i in $(seq 1 40); do head -c 20000 /dev/urandom > ${m.mountpoint}/f$i; done; cat ${m.mountpoint}/f* > /dev/null; sync -f ${m.mountpoint}/f1`)
    await controlRequest(m.socket, { op: 'commit' })
    const after = await (await fetch(url)).text()
    const volume = 'volume="watched"'
    expect(sample(after, 's0fs_fuse_requests_total', `op="write"`)).toBeGreaterThan(sample(before, 's0fs_fuse_requests_total', 'op="write"'))
    expect(sample(after, 's0fs_fuse_bytes_total', 'op="write"')).toBeGreaterThanOrEqual(40 * 20000)
    expect(sample(after, 's0fs_store_requests_total', 'kind="put"')).toBeGreaterThan(sample(before, 's0fs_store_requests_total', 'kind="put"'))
    expect(sample(after, 's0fs_generation', volume)).toBeGreaterThan(sample(before, 's0fs_generation', volume))
    expect(sample(after, 's0fs_lease_held', volume)).toBe(1)
    expect((await fetch(url.replace('/metrics', '/other'))).status).toBe(404)

    // s0fs stats while a writer runs: its rates are not zero.
    const writer = sh(`for i in $(seq 1 400); do head -c 8192 /dev/urandom > ${m.mountpoint}/g$i; done`, { timeoutMs: 120_000 })
    const r = await runCli(['stats', m.mountpoint, '--json', '--interval', '1.5', '--count', '1'], { env: ctx.backend.env })
    await writer
    expect(r.code, r.stderr).toBe(0)
    const live = JSON.parse(r.stdout)
    expect(live.volume).toBe('watched')
    expect(live.opsPerSecond.write).toBeGreaterThan(0)
    expect(live.fuseWriteBytesPerSecond).toBeGreaterThan(0)
    expect(live.busyPolledPerSecond).toBeGreaterThanOrEqual(0)
    expect(live.lease).toBeTruthy()
    const text = await runCli(['stats', m.mountpoint, '--count', '1', '--interval', '0.2'], { env: ctx.backend.env })
    expect(text.stdout).toMatch(/watched at .*generation \d+/)
    expect(text.stdout).toMatch(/portal {6}cache/)
    const missing = await runCli(['stats', path.join(ctx.backend.home, 'not-mounted')], { env: ctx.backend.env })
    expect(missing.code).toBe(3)
    await m.umount()
  }, 120_000)

  it('busy polling reads requests made back to back, and --busy-poll 0 turns it off', async () => {
    // 3,000 getxattr calls, each a FUSE request (a missing attribute is never cached by the kernel).
    const requests = (mountpoint: string) =>
      mustSh(`touch ${mountpoint}/f && python3 -c '
import os
for i in range(3000):
    try: os.getxattr("${mountpoint}/f", "user.none")
    except OSError: pass'`)
    const polled = async (socket: string) => ((await controlRequest(socket, { op: 'status' })).fuse as { busyPollUs: number; busyPolled: number })

    const plain = ctx.track(await mountVolume(ctx.backend, { volume: 'polling' }))
    expect((await polled(plain.socket)).busyPollUs).toBe(50)
    await plain.umount()

    // The widest window (10 ms), so that catching requests does not depend on how busy the machine is:
    // with the default 50 µs, CI under load (other test files beside this one) once caught 84 of 3,000
    // and once none. With polling off, none may be.
    const on = ctx.track(await mountVolume(ctx.backend, { volume: 'polling', args: ['--busy-poll', '10000', '--metrics', '127.0.0.1:0'] }))
    expect((await polled(on.socket)).busyPollUs).toBe(10_000)
    await requests(on.mountpoint)
    const caught = (await polled(on.socket)).busyPolled
    expect(caught).toBeGreaterThan(0)
    const url = (await controlRequest(on.socket, { op: 'status' })).metricsUrl as string
    expect(sample(await (await fetch(url)).text(), 's0fs_fuse_busy_polled_total', 'volume="polling"')).toBeGreaterThanOrEqual(caught)
    await on.umount()

    const off = ctx.track(await mountVolume(ctx.backend, { volume: 'polling', args: ['--busy-poll', '0'] }))
    await requests(off.mountpoint)
    expect(await polled(off.socket)).toEqual({ busyPollUs: 0, busyPolled: 0 })
    await off.umount()

    const bad = await runCli(['mount', 'polling', path.join(ctx.backend.home, 'mnt-bad'), '--busy-poll', 'soon'], { env: ctx.backend.env })
    expect(bad.code).toBe(2)
    expect(bad.stderr).toMatch(/--busy-poll must be a whole number of microseconds/)
  }, 120_000)
})
