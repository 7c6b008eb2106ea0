import { spawn } from 'node:child_process'
import { readFileSync, writeFileSync } from 'node:fs'
import path from 'node:path'
import { describe, expect, it } from 'vitest'
import { controlRequest } from '../../src/mount/control.js'
import { sleep } from '../../src/store/index.js'
import { runCli } from '../helpers/cli.js'
import { checkSurvivors } from '../helpers/crash.js'
import { bdiSetting, fuseConnectionSetting, mountVolume, mustCli, mustSh, useBackend, type Mounted } from '../helpers/mount.js'

const WRITER = path.join(import.meta.dirname, '../fixtures/crash-writer.py')
const MiB = 1024 * 1024

/** WRITE requests the daemon has answered so far (its per-operation counters). */
async function writeRequests(m: Mounted): Promise<number> {
  const status = (await controlRequest(m.socket, { op: 'status' })) as { ops: Record<string, { count: number }> }
  return status.ops.write?.count ?? 0
}

/**
 * `mount --writeback-cache`: the kernel buffers writes and sends them in
 * batches. What must not change: fsync is durable, a snapshot or unmount
 * holds every write made before it, and nothing is written around the
 * kernel's back. (The POSIX suite also runs on such a mount: posix.test.ts.)
 */
describe('mount --writeback-cache', () => {
  const ctx = useBackend()

  it('batches random 4 KiB writes, and fio --verify reads them back after a remount', async () => {
    const m = ctx.track(await mountVolume(ctx.backend, { volume: 'fio', args: ['--writeback-cache'] }))
    // The kernel may hold 256 MiB of this mount's writes (it starts FUSE mounts at 1% of its dirty limit).
    const near256MiB = (v: string) => Math.abs(Number(v) - 256 * MiB) < MiB
    const dirtyLimit = Number(await bdiSetting(m, 'max_bytes', near256MiB))
    expect(Math.abs(dirtyLimit - 256 * MiB)).toBeLessThan(MiB)
    // Background WRITEs in flight, each holding up to 1 MiB in the daemon: 8 here (16 without the writeback cache).
    expect(await fuseConnectionSetting(m, 'max_background')).toBe('8')
    expect(await fuseConnectionSetting(m, 'congestion_threshold')).toBe('6')
    const file = path.join(m.mountpoint, 'fio.bin')
    const job = `fio --name=wb --filename=${file} --size=32M --bs=4k --rw=randwrite --ioengine=psync --verify=crc32c --verify_state_save=0`
    await mustSh(`${job} --do_verify=0 --output-format=terse`, { timeoutMs: 120_000 })
    // 8,192 random writes of 4 KiB arrive as far fewer, larger WRITEs.
    const writes = await writeRequests(m)
    expect(writes).toBeGreaterThan(0)
    expect(writes).toBeLessThan(2048)
    await m.umount()
    await mustSh('echo 3 > /proc/sys/vm/drop_caches')
    // Without the writeback cache now: every block must come from what the daemon stored.
    const again = ctx.track(await mountVolume(ctx.backend, { volume: 'fio', mountpoint: m.mountpoint }))
    const verify = await mustSh(`${job} --verify_only --output-format=terse`, { timeoutMs: 120_000 })
    expect(verify).not.toMatch(/verify: bad|bad magic|crc32c/i)
    await again.umount()
  }, 300_000)

  it('keeps every fsynced byte and rename through a kill -9 of the daemon', async () => {
    const m = ctx.track(await mountVolume(ctx.backend, { volume: 'crash', args: ['--writeback-cache'] }))
    const dir = path.join(m.mountpoint, 'trial')
    const log = path.join(ctx.backend.home, 'wb-trial.log')
    writeFileSync(log, '')
    const writer = spawn('python3', [WRITER, dir, log, '4242', '30'], { stdio: ['ignore', 'pipe', 'pipe'] })
    const exited = new Promise<void>((resolve) => writer.on('close', () => resolve()))
    await sleep(2500)
    m.kill()
    await exited
    const logText = readFileSync(log, 'utf8')
    expect(logText.split('\n').filter((l) => l.startsWith('sync')).length).toBeGreaterThan(3)
    const after = ctx.track(await mountVolume(ctx.backend, { volume: 'crash', mountpoint: m.mountpoint }))
    expect(checkSurvivors(dir, logText)).toEqual([])
    await after.umount()
  }, 120_000)

  it('puts writes still in the kernel into a snapshot and the unmount', async () => {
    const m = ctx.track(await mountVolume(ctx.backend, { volume: 'snap', args: ['--writeback-cache'] }))
    const file = path.join(m.mountpoint, 'open.bin')
    // A process writes 3 MiB and keeps the file open, without fsync: the bytes sit in the kernel.
    const holder = spawn('python3', ['-c', `import os,sys\nfd=os.open(${JSON.stringify(file)},os.O_CREAT|os.O_WRONLY,0o644)\nos.write(fd,b'a'*${3 * MiB})\nprint('written',flush=True)\nsys.stdin.read()`], {
      stdio: ['pipe', 'pipe', 'inherit'],
    })
    try {
      await new Promise<void>((resolve) => holder.stdout.once('data', () => resolve()))
      await mustCli(['snapshot', 'create', '--repo', ctx.backend.repo!, 'snap', 'while-open'], ctx.backend.env)
      const listed = await mustCli(['stat', '--repo', ctx.backend.repo!, '--json', 'while-open:/open.bin'], ctx.backend.env)
      expect(JSON.parse(listed.stdout).size).toBe(3 * MiB)
    } finally {
      holder.stdin.end()
      await new Promise((resolve) => holder.on('close', resolve))
    }
    await m.umount()
    const stat = await mustCli(['stat', '--repo', ctx.backend.repo!, '--json', 'snap:/open.bin'], ctx.backend.env)
    expect(JSON.parse(stat.stdout).size).toBe(3 * MiB)
  }, 120_000)

  it('refuses to rewrite an existing file around the kernel, and takes new files', async () => {
    const m = ctx.track(await mountVolume(ctx.backend, { volume: 'put', args: ['--writeback-cache'] }))
    await mustSh(`printf 'kernel copy' > ${m.mountpoint}/kept.txt && cat ${m.mountpoint}/kept.txt >/dev/null`)
    const source = path.join(ctx.backend.home, 'put-source.txt')
    writeFileSync(source, 'rewritten elsewhere, longer than before')
    const refused = await runCli(['put', '--repo', ctx.backend.repo!, source, 'put:/kept.txt'], { env: ctx.backend.env })
    expect(refused.code).not.toBe(0)
    expect(refused.stderr).toMatch(/kept\.txt exists, and this volume is mounted with --writeback-cache/)
    expect(readFileSync(path.join(m.mountpoint, 'kept.txt'), 'utf8')).toBe('kernel copy')
    await mustCli(['put', '--repo', ctx.backend.repo!, source, 'put:/new.txt'], ctx.backend.env)
    expect(readFileSync(path.join(m.mountpoint, 'new.txt'), 'utf8')).toBe('rewritten elsewhere, longer than before')
    await m.umount()
  }, 120_000)
})
