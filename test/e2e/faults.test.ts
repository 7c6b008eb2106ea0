import { rmSync } from 'node:fs'
import path from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { FaultProxy } from '../../bench/fault-proxy.js'
import { mountVolume, mustSh, s3Backend, sh, type Backend, type Mounted } from '../helpers/mount.js'
import { s3Servers } from '../helpers/stores.js'

/**
 * Real HTTP faults between the mount daemon and the local S3 server: 10%
 * 500s, 503 SlowDown, 500 ms latency spikes, and full outages (connections
 * reset). The workload keeps running from the portal, everything reaches
 * the bucket once it is back, and fsync with --sync remote waits and then
 * succeeds, or answers EIO — never a false success.
 *
 * The proxy runs in this process, so every access to the mount goes through
 * a child process (sh): a blocking call here would stall the proxy the
 * daemon is waiting on.
 */

const s3rver = s3Servers().find((s) => s.name === 's3rver')

describe.runIf(s3rver)('object-store faults through a proxy (s3rver)', () => {
  let proxy: FaultProxy
  let backend: Backend
  const mounts: Mounted[] = []

  beforeAll(async () => {
    proxy = new FaultProxy(new URL(s3rver!.endpoint))
    const endpoint = await proxy.start()
    backend = await s3Backend({ ...s3rver!, endpoint })
  }, 120_000)

  afterAll(async () => {
    proxy.up()
    proxy.set({ errorRate: 0, slowDownRate: 0, spikeRate: 0 })
    for (const m of mounts) await m.teardown()
    backend?.cleanup()
    await proxy.close()
  }, 180_000)

  const workload = (dir: string, files: number, tag: string) =>
    `mkdir -p ${dir} && for i in $(seq 1 ${files}); do echo "${tag} file $i $RANDOM" > ${dir}/f$i; done && head -c 16777216 /dev/urandom > ${dir}/big.bin && sync -f ${dir}/big.bin`

  it('a flaky store and a 30 s outage: the workload finishes from the portal, and all of it reaches the bucket', async () => {
    proxy.set({ errorRate: 0.1, slowDownRate: 0.05, spikeRate: 0.2, spikeMs: 500 })
    const m = await mountVolume(backend, { volume: 'flaky', args: ['--commit-interval', '1'] })
    mounts.push(m)
    await mustSh(workload(`${m.mountpoint}/phase1`, 200, 'flaky'), { timeoutMs: 180_000 })
    // A full outage while the next phase runs: writes keep landing in the portal.
    proxy.down()
    const during = sh(workload(`${m.mountpoint}/phase2`, 100, 'outage'), { timeoutMs: 180_000 })
    await new Promise((r) => setTimeout(r, 30_000))
    const resetDuringOutage = proxy.counters.reset
    proxy.up()
    const phase2 = await during
    expect(phase2.code, phase2.stderr.slice(0, 300) + m.logTail()).toBe(0)
    expect(resetDuringOutage, JSON.stringify(proxy.counters)).toBeGreaterThan(0)
    const manifest = path.join(backend.home, 'flaky.sha256')
    await mustSh(`cd ${m.mountpoint} && find phase1 phase2 -type f -print0 | sort -z | xargs -0 sha256sum > ${manifest}`, { timeoutMs: 120_000 })
    expect(m.logTail()).not.toMatch(/Error:|unhandled/i) // faults are logged as warnings, never crash the daemon
    // The final commit gets through the remaining 500s and SlowDowns. A failure names the daemon's log and the proxy's counters.
    await m.umount().catch((err: Error) => {
      throw new Error(`${err.message}\n--- daemon log (tail) ---\n${m.logTail()}\n--- proxy --- ${JSON.stringify(proxy.counters)}`)
    })
    const firstLog = m.logTail()
    // The proxy applies rates by request count, not by chance: any 20 consecutive requests include a 500
    // (every 10th), a SlowDown (every 20th) and a spike (every 5th), and the mount alone makes ~16.
    expect(proxy.counters.errors, JSON.stringify(proxy.counters)).toBeGreaterThan(0)
    expect(proxy.counters.slowDowns, JSON.stringify(proxy.counters)).toBeGreaterThan(0)
    expect(proxy.counters.spikes, JSON.stringify(proxy.counters)).toBeGreaterThan(0)

    // Read everything back from the bucket alone: no portal, no faults.
    proxy.set({ errorRate: 0, slowDownRate: 0, spikeRate: 0 })
    rmSync(path.join(backend.home, 'portal'), { recursive: true, force: true })
    const again = await mountVolume(backend, { volume: 'flaky', mountpoint: m.mountpoint })
    mounts.push(again)
    const check = await sh(`cd ${again.mountpoint} && sha256sum --quiet -c ${manifest} && wc -l < ${manifest}`, { timeoutMs: 120_000 })
    expect(check.code, firstLog + check.stderr.slice(0, 300)).toBe(0)
    expect(Number(check.stdout.trim())).toBe(302)
    await again.umount()
  }, 240_000)

  it('fsync with --sync remote answers EIO when the bucket stays away, and succeeds once it is back', async () => {
    const m = await mountVolume(backend, { volume: 'remote', args: ['--sync', 'remote', '--sync-timeout', '3'] })
    mounts.push(m)
    const fsyncWrite = (file: string, text: string) =>
      sh(`python3 -c "
import os, sys, time
t = time.time()
fd = os.open('${file}', os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
os.write(fd, b'${text}')
try:
    os.fsync(fd); print('ok', round(time.time() - t, 1))
except OSError as e:
    print('error', e.errno, round(time.time() - t, 1)); sys.exit(3)
"`, { timeoutMs: 120_000 })
    proxy.down()
    const failed = await fsyncWrite(`${m.mountpoint}/during-outage.txt`, 'written during the outage')
    expect(failed.code).toBe(3)
    expect(failed.stdout).toMatch(/^error 5 /) // EIO, after the 3 s deadline
    proxy.up()
    const ok = await fsyncWrite(`${m.mountpoint}/after.txt`, 'written after')
    expect(ok.code, ok.stdout + ok.stderr).toBe(0)
    await m.umount()
    // What fsync could not promise was still kept, and reached the bucket once it could.
    rmSync(path.join(backend.home, 'portal'), { recursive: true, force: true })
    const again = await mountVolume(backend, { volume: 'remote', mountpoint: m.mountpoint })
    mounts.push(again)
    expect(await mustSh(`cat ${again.mountpoint}/during-outage.txt ${again.mountpoint}/after.txt`)).toBe('written during the outagewritten after')
    await again.umount()
  }, 300_000)

  it('fsync with --sync remote waits out a short outage and then succeeds', async () => {
    const m = await mountVolume(backend, { volume: 'waits', args: ['--sync', 'remote'] })
    mounts.push(m)
    proxy.down()
    const writer = sh(`echo patience > ${m.mountpoint}/w.txt && python3 -c "import os; fd = os.open('${m.mountpoint}/w.txt', os.O_RDWR); os.fsync(fd); print('synced')"`, { timeoutMs: 120_000 })
    let settled = false
    void writer.then(() => (settled = true))
    await new Promise((r) => setTimeout(r, 4_000))
    expect(settled).toBe(false) // still waiting: it does not answer while the bucket is away
    proxy.up()
    const r = await writer
    expect(r.code, r.stderr).toBe(0)
    expect(r.stdout.trim()).toBe('synced')
    await m.umount()
  }, 180_000)
})
