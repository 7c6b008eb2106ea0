import { spawn } from 'node:child_process'
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import path from 'node:path'
import { describe, expect, it } from 'vitest'
import { canonicalMountpoint, mountState } from '../../src/mount/registry.js'
import { SERVING_NICE } from '../../src/mount/runtime.js'
import { Repository } from '../../src/repo/index.js'
import { sleep } from '../../src/store/index.js'
import { BIN, runCli } from '../helpers/cli.js'
import { bdiSetting, forceUnmount, fuseConnectionSetting, mountVolume, mustSh, PASSPHRASE, sh, useBackend } from '../helpers/mount.js'

/**
 * The mount's life cycle through the CLI: --create, a second writer, signals,
 * a dead mount, --read-only, --snapshot and --sync remote.
 */
describe('mount life cycle', () => {
  const files = useBackend()
  const track = files.track

  const mountArgs = (volume: string, mountpoint: string, ...extra: string[]) => [
    'mount',
    '--repo',
    files.backend.repo!,
    volume,
    mountpoint,
    '--cache-dir',
    path.join(files.backend.home, 'portal'),
    ...extra,
  ]

  const waitUnmounted = async (mountpoint: string) => {
    for (let i = 0; i < 100 && (await mountState(canonicalMountpoint(mountpoint))) !== 'none'; i++) await sleep(100)
    return mountState(canonicalMountpoint(mountpoint))
  }

  /** `s0fs mount --create --foreground` as a child: its stderr collected, its exit code awaited. */
  const foregroundDaemon = (volume: string, mountpoint: string, env: NodeJS.ProcessEnv) => {
    const daemon = spawn(process.execPath, [BIN, ...mountArgs(volume, mountpoint, '--create', '--foreground')], {
      env: { ...process.env, S0FS_KEY_FILE: undefined, ...env },
      stdio: ['ignore', 'ignore', 'pipe'],
    })
    let log = ''
    daemon.stderr!.on('data', (d) => (log += d))
    const exited = new Promise<number | null>((resolve) => daemon.on('close', resolve))
    return { daemon, exited, log: () => log }
  }

  it('refuses a missing volume without --create, naming it', async () => {
    const mountpoint = path.join(files.backend.home, 'mnt-missing')
    mkdirSync(mountpoint)
    const r = await runCli(mountArgs('no-such-volume', mountpoint), { env: files.backend.env })
    expect(r.code).toBe(3)
    expect(r.stderr).toMatch(/no-such-volume/)
    expect(r.stderr).toMatch(/--create/)
    expect(await mountState(canonicalMountpoint(mountpoint))).toBe('none')
  }, 60_000)

  it('raises the mount\'s readahead to one full-size request (1 MiB), so sequential reads are not cut into 128 KiB', async () => {
    const m = track(await mountVolume(files.backend, { volume: 'readahead' }))
    expect(m.device).toMatch(/^\d+:\d+$/)
    expect(await bdiSetting(m, 'read_ahead_kb', (v) => v === '1024')).toBe('1024')
    // Room for that readahead: 16 background requests (8 with --writeback-cache, mount-writeback.test.ts).
    expect(await fuseConnectionSetting(m, 'max_background')).toBe('16')
    // The mount's options say what it does: no atime updates, no devices, no setuid.
    const options = (await mustSh(`findmnt -n -o OPTIONS ${m.mountpoint}`)).trim().split(',')
    expect(options).toEqual(expect.arrayContaining(['noatime', 'nodev', 'nosuid']))
    await m.umount()
  }, 60_000)

  it('umount refuses a busy mount (it keeps serving), and --lazy detaches it', async () => {
    const m = track(await mountVolume(files.backend, { volume: 'busy' }))
    const file = path.join(m.mountpoint, 'open.txt')
    // A process keeps a file open and writes to it after the refused unmount.
    const holder = spawn('python3', ['-c', `import sys\nf=open(${JSON.stringify(file)},'w')\nprint('open',flush=True)\nsys.stdin.readline()\nf.write('still served');f.close()\nprint('closed',flush=True)\nsys.stdin.read()`], {
      stdio: ['pipe', 'pipe', 'inherit'],
      cwd: m.mountpoint,
    })
    try {
      await new Promise<void>((resolve) => holder.stdout.once('data', () => resolve()))
      const refused = await runCli(['umount', m.mountpoint], { env: files.backend.env })
      expect(refused.code).toBe(7)
      expect(refused.stderr).toMatch(/is busy.*--lazy/)
      expect(await mountState(canonicalMountpoint(m.mountpoint))).toBe('mounted')
      holder.stdin.write('\n')
      await new Promise<void>((resolve) => holder.stdout.once('data', () => resolve()))
      expect(readFileSync(file, 'utf8')).toBe('still served')
      // Still busy (the holder's working directory): --lazy detaches it anyway, and everything is committed.
      const lazy = await runCli(['umount', '--lazy', m.mountpoint], { env: files.backend.env })
      expect(lazy.code).toBe(0)
      expect(await mountState(canonicalMountpoint(m.mountpoint))).toBe('none')
    } finally {
      holder.stdin.end()
      await new Promise((resolve) => holder.on('close', resolve))
    }
    const again = track(await mountVolume(files.backend, { volume: 'busy' }))
    expect(readFileSync(path.join(again.mountpoint, 'open.txt'), 'utf8')).toBe('still served')
    await again.umount()
  }, 120_000)

  it('refuses a second writer of a mounted volume, naming the holder', async () => {
    const first = track(await mountVolume(files.backend, { volume: 'shared' }))
    const other = path.join(files.backend.home, 'mnt-second')
    mkdirSync(other)
    const r = await runCli(mountArgs('shared', other), { env: files.backend.env })
    expect(r.code).toBe(7)
    expect(r.stderr).toMatch(/held by/i)
    expect(r.stderr).toMatch(/until|expires/i)
    expect(await mountState(canonicalMountpoint(other))).toBe('none')
    await first.umount()
  }, 120_000)

  it('answers requests from a thread that runs above its own background work (nice -5 against 0)', async () => {
    const m = track(await mountVolume(files.backend, { volume: 'priority' }))
    // Field 19 of /proc/PID/task/TID/stat is the thread's nice value; the main thread's TID is the PID.
    const nice = (tid: string) => Number(readFileSync(`/proc/${m.pid}/task/${tid}/stat`, 'utf8').split(') ')[1].split(' ')[16])
    const tasks = readdirSync(`/proc/${m.pid}/task`)
    expect(nice(String(m.pid))).toBe(SERVING_NICE)
    const others = tasks.filter((t) => t !== String(m.pid)).map(nice)
    expect(others.length).toBeGreaterThanOrEqual(16) // the 16 pool threads (and V8's own), at the default
    expect(others.every((n) => n === 0)).toBe(true)
    await m.umount()
  }, 120_000)

  for (const signal of ['SIGTERM', 'SIGINT'] as const) {
    it(`${signal} to the daemon commits, releases the lease and unmounts`, async () => {
      const m = track(await mountVolume(files.backend, { volume: `sig-${signal}` }))
      await mustSh(`printf 'kept by ${signal}' > ${m.mountpoint}/note`)
      process.kill(m.pid, signal)
      expect(await waitUnmounted(m.mountpoint)).toBe('none')
      // The lease is free again: a new mount works at once, and sees the data.
      const again = track(await mountVolume(files.backend, { volume: `sig-${signal}`, mountpoint: m.mountpoint }))
      expect(readFileSync(path.join(again.mountpoint, 'note'), 'utf8')).toBe(`kept by ${signal}`)
      await again.umount()
    }, 120_000)
  }

  it('in the foreground, makes its runtime directory and answers s0fs umount', async () => {
    // A fresh XDG_RUNTIME_DIR: nothing under it exists until the daemon makes it.
    const runtime = path.join(files.backend.home, 'fresh-runtime')
    const env = { ...files.backend.env, XDG_RUNTIME_DIR: runtime }
    const mountpoint = path.join(files.backend.home, 'mnt-foreground')
    mkdirSync(mountpoint)
    const { daemon, exited, log } = foregroundDaemon('fg', mountpoint, env)
    try {
      for (let i = 0; i < 200 && (await mountState(canonicalMountpoint(mountpoint))) !== 'mounted'; i++) await sleep(100)
      expect(await mountState(canonicalMountpoint(mountpoint)), log()).toBe('mounted')
      writeFileSync(path.join(mountpoint, 'f'), 'foreground')
      const r = await runCli(['umount', mountpoint], { env })
      expect(r.code, r.stderr + log()).toBe(0)
      expect(await exited).toBe(0)
      expect(log()).not.toMatch(/EACCES|ENOENT|failed/)
    } finally {
      daemon.kill('SIGKILL')
      forceUnmount(mountpoint)
    }
  }, 120_000)

  it('a SIGTERM the moment the mount appears still unmounts cleanly', async () => {
    // Supervisors signal as soon as they see the mount; the daemon may still be finishing its start.
    const mountpoint = path.join(files.backend.home, 'mnt-early-term')
    mkdirSync(mountpoint)
    const { daemon, exited, log } = foregroundDaemon('early-term', mountpoint, files.backend.env)
    try {
      for (let i = 0; i < 2000 && (await mountState(canonicalMountpoint(mountpoint))) !== 'mounted'; i++) await sleep(5)
      daemon.kill('SIGTERM')
      expect(await exited, log()).toBe(0)
      expect(await mountState(canonicalMountpoint(mountpoint))).toBe('none')
    } finally {
      daemon.kill('SIGKILL')
      forceUnmount(mountpoint)
    }
  }, 120_000)

  it('cleans up a mount left dead by a killed daemon and replays its log', async () => {
    const m = track(await mountVolume(files.backend, { volume: 'dead' }))
    await mustSh(`printf 'fsynced' > ${m.mountpoint}/f && sync ${m.mountpoint}/f`)
    m.kill()
    await sleep(300)
    expect(await mountState(canonicalMountpoint(m.mountpoint))).toBe('dead')
    const list = await sh(`ls ${m.mountpoint}`)
    expect(list.stderr).toMatch(/Transport endpoint is not connected/)
    const again = track(await mountVolume(files.backend, { volume: 'dead', mountpoint: m.mountpoint }))
    expect(readFileSync(path.join(again.mountpoint, 'f'), 'utf8')).toBe('fsynced')
    await again.umount()
  }, 120_000)

  it('serves --read-only and --snapshot mounts without taking writes', async () => {
    const m = track(await mountVolume(files.backend, { volume: 'snapme' }))
    writeFileSync(path.join(m.mountpoint, 'a'), 'version 1')
    await m.umount()
    const repo = await Repository.open(files.backend.repo!, { kind: 'passphrase', passphrase: PASSPHRASE })
    try {
      await repo.createSnapshot('snapme', 'v1')
    } finally {
      await repo.close()
    }
    const w = track(await mountVolume(files.backend, { volume: 'snapme' }))
    writeFileSync(path.join(w.mountpoint, 'a'), 'version 2')

    // A snapshot mounts read-only beside the writer and shows its own content.
    const snapDir = path.join(files.backend.home, 'mnt-snap')
    mkdirSync(snapDir)
    // Naming another volume than the snapshot's is a mistake, said as one.
    const wrong = await runCli(mountArgs('other', snapDir, '--snapshot', 'v1'), { env: files.backend.env })
    expect(wrong.code).toBe(2)
    expect(wrong.stderr).toMatch(/snapshot v1 is of volume snapme, not other/)
    const s = await runCli(mountArgs('snapme', snapDir, '--snapshot', 'v1'), { env: files.backend.env })
    expect(s.code, s.stderr).toBe(0)
    try {
      expect(readFileSync(path.join(snapDir, 'a'), 'utf8')).toBe('version 1')
      const write = await sh(`echo x > ${snapDir}/b`)
      expect(write.stderr).toMatch(/Read-only file system/)
    } finally {
      const u = await runCli(['umount', snapDir], { env: files.backend.env })
      if (u.code !== 0) forceUnmount(snapDir)
    }
    await w.umount()

    const ro = track(await mountVolume(files.backend, { volume: 'snapme', args: ['--read-only'] }))
    expect(readFileSync(path.join(ro.mountpoint, 'a'), 'utf8')).toBe('version 2')
    expect((await sh(`touch ${ro.mountpoint}/new`)).stderr).toMatch(/Read-only file system/)
    await ro.umount()
  }, 180_000)

  it('with --sync remote, an fsynced file survives losing the daemon and the portal', async () => {
    const portal = path.join(files.backend.home, 'portal-remote')
    const args = ['--sync', 'remote', '--cache-dir', portal]
    const m = track(await mountVolume(files.backend, { volume: 'remote', args }))
    await mustSh(`head -c 300000 /dev/urandom > ${files.backend.home}/payload && dd if=${files.backend.home}/payload of=${m.mountpoint}/p bs=64k conv=fsync status=none`)
    m.kill()
    await sleep(300)
    // The node is gone: no log to replay. Only what reached the bucket remains.
    rmSync(portal, { recursive: true, force: true })
    expect(existsSync(portal)).toBe(false)
    const again = track(await mountVolume(files.backend, { volume: 'remote', mountpoint: m.mountpoint, args: ['--cache-dir', portal] }))
    expect(readFileSync(path.join(again.mountpoint, 'p')).equals(readFileSync(path.join(files.backend.home, 'payload')))).toBe(true)
    await again.umount()
  }, 180_000)
})
