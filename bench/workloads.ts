/**
 * The workloads of `s0fs bench`. Each runs the same steps on the s0fs mount
 * and on local disk and returns figures under stable snake_case names; the
 * report pairs them up. Real tools do the work (dd, tar, git, fio); loops of
 * small-file syscalls run in Python so no shell sits between two calls.
 */
import { spawnSync } from 'node:child_process'
import { randomFillSync } from 'node:crypto'
import { closeSync, existsSync, fsyncSync, mkdirSync, openSync, readdirSync, statSync, writeFileSync, writeSync } from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { python, s0fs, timed, type BenchContext, type Target } from './harness.js'
import { runMeta } from './meta.js'
import { readKeyFile } from '../src/crypto/index.js'
import { controlRequest } from '../src/mount/control.js'
import { canonicalMountpoint, recordPaths } from '../src/mount/registry.js'
import { Repository } from '../src/repo/index.js'

export type Figures = Record<string, number | boolean | string>

export type Progress = (step: string) => void

export interface Workload {
  name: string
  summary: string
  /** Figures measured on one target (run on s0fs, then on local disk, then on each `--compare` tool)… */
  run?(ctx: BenchContext, t: Target, progress: Progress): Promise<Figures>
  /** …or, for what has no local-disk counterpart, on s0fs alone. */
  runOnce?(ctx: BenchContext, progress: Progress): Promise<Figures>
}

const MiB = 1024 * 1024

function rate(count: number, seconds: number): number {
  return Math.round(count / seconds)
}

function mibPerS(bytes: number, seconds: number): number {
  return Math.round(bytes / MiB / seconds)
}

/** A file of random bytes (incompressible, so no layer can shortcut it), made once per run. */
function randomSource(ctx: BenchContext, name: string, bytes: number): string {
  const file = path.join(ctx.work, name)
  if (existsSync(file) && statSync(file).size === bytes) return file
  const fd = openSync(file, 'w')
  const block = Buffer.alloc(MiB)
  try {
    for (let done = 0; done < bytes; done += block.length) writeSync(fd, randomFillSync(block), 0, Math.min(block.length, bytes - done))
    // On disk before anything is timed: it is made inside the first measurement (s0fs's), and its 512 MiB
    // of writeback would otherwise compete with that side's writes alone.
    fsyncSync(fd)
  } finally {
    closeSync(fd)
  }
  return file
}

function warm(file: string): void {
  // Into the page cache: reading the source is not what is measured.
  timed('dd', [`if=${file}`, 'of=/dev/null', 'bs=1M', 'status=none'])
}

const seq: Workload = {
  name: 'seq',
  summary: 'dd a 512 MiB file (bs=1M, conv=fsync); read it back cold from the bucket and from the portal',
  async run(ctx, t, progress) {
    const bytes = (ctx.quick ? 32 : 512) * MiB
    const source = randomSource(ctx, 'seq-source', bytes)
    const file = path.join(t.dir, 'seq.bin')
    warm(source)
    progress('write')
    const write = timed('dd', [`if=${source}`, `of=${file}`, 'bs=1M', 'conv=fsync', 'status=none'])
    progress('cold read (bucket)')
    await t.cold({ portal: true })
    const fromBucket = timed('dd', [`if=${file}`, 'of=/dev/null', 'bs=1M', 'status=none'])
    progress('cold read (portal)')
    await t.cold()
    const fromPortal = timed('dd', [`if=${file}`, 'of=/dev/null', 'bs=1M', 'status=none'])
    return {
      write_mib_per_s: mibPerS(bytes, write.seconds),
      read_cold_bucket_mib_per_s: mibPerS(bytes, fromBucket.seconds),
      read_cold_portal_mib_per_s: mibPerS(bytes, fromPortal.seconds),
    }
  },
}

/** Small-file steps, one per invocation: create (then fsync + sync), stat, read, delete. */
const SMALL_PY = String.raw`
import os, sys, time
root, step, dirs, files, size = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
names = [os.path.join(root, 'd%02d' % (i % dirs), 'f%05d' % i) for i in range(files)]
# Every file its own random bytes, made before the clock starts: files with one content would be one
# blob to s0fs (deduplicated, then decoded once for every read).
data = memoryview(os.urandom(size * files)) if step == 'create' else None
t0 = time.perf_counter()
if step == 'create':
    for d in range(dirs):
        os.mkdir(os.path.join(root, 'd%02d' % d))
    for i, n in enumerate(names):
        fd = os.open(n, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        os.write(fd, data[i * size:(i + 1) * size])
        os.close(fd)
    # Durable before the clock stops: on s0fs one fsync orders everything before it (one log);
    # on local disk sync() flushes every file.
    fd = os.open(names[-1], os.O_RDONLY)
    os.fsync(fd)
    os.close(fd)
    os.sync()
elif step == 'stat':
    for n in names:
        os.stat(n)
elif step == 'read':
    total = 0
    for n in names:
        with open(n, 'rb', buffering=0) as f:
            total += len(f.read())
    assert total == files * size, total
elif step == 'delete':
    for n in names:
        os.unlink(n)
    for d in range(dirs):
        os.rmdir(os.path.join(root, 'd%02d' % d))
print(time.perf_counter() - t0)
`

function smallStep(dir: string, step: string, files: number): number {
  return Number(python(SMALL_PY, [dir, step, '50', String(files), '4096']).stdout.trim())
}

const small: Workload = {
  name: 'small',
  summary: '5,000 files of 4 KiB (each its own random bytes) in 50 directories: create + fsync, stat cold, read cold, delete',
  async run(ctx, t, progress) {
    const files = ctx.quick ? 500 : 5000
    progress('create')
    const create = smallStep(t.dir, 'create', files)
    progress('stat (cold)')
    await t.cold()
    const stat = smallStep(t.dir, 'stat', files)
    progress('read (cold)')
    await t.cold()
    const read = smallStep(t.dir, 'read', files)
    progress('delete')
    const del = smallStep(t.dir, 'delete', files)
    return {
      files,
      create_files_per_s: rate(files, create),
      stat_files_per_s: rate(files, stat),
      read_files_per_s: rate(files, read),
      delete_files_per_s: rate(files, del),
    }
  },
}

/** This checkout's node_modules (dist/bench/ → ../../node_modules). */
const NODE_MODULES = fileURLToPath(new URL('../../node_modules', import.meta.url))

/**
 * A real source tree, the same on every machine that ran `npm ci`: the
 * project's own dependencies (their sources, licences and type files),
 * taken in sorted order until there are enough entries.
 */
function corpusList(entries: number): string[] {
  const root = NODE_MODULES
  const picked: string[] = []
  const walk = (rel: string): void => {
    if (picked.length >= entries) return
    picked.push(rel)
    const full = path.join(root, rel)
    if (!statSync(full).isDirectory()) return
    for (const name of readdirSync(full).sort()) {
      if (name === '.bin' || name === '.package-lock.json') continue
      walk(path.join(rel, name))
    }
  }
  for (const name of readdirSync(root).sort()) if (name !== '.bin' && !name.startsWith('.')) walk(name)
  return picked
}

function corpusTarball(ctx: BenchContext): { tarball: string; entries: number } {
  const tarball = path.join(ctx.work, 'corpus.tar')
  const entries = ctx.quick ? 500 : 5000
  if (!existsSync(tarball)) {
    const listFile = path.join(ctx.work, 'corpus.list')
    writeFileSync(listFile, corpusList(entries).join('\n') + '\n')
    timed('tar', ['-cf', tarball, '--no-recursion', '-C', NODE_MODULES, '-T', listFile])
  }
  return { tarball, entries }
}

const tar: Workload = {
  name: 'tar',
  summary: 'tar -x of a ~5,000-entry source tarball, then tar --compare of the tree against it',
  async run(ctx, t, progress) {
    const { tarball, entries } = corpusTarball(ctx)
    warm(tarball)
    const dest = path.join(t.dir, 'src')
    mkdirSync(dest)
    progress('extract')
    const extract = timed('tar', ['-xf', tarball, '-C', dest])
    progress('compare')
    await t.cold()
    // --compare reads every file back and checks contents, sizes, modes and times.
    const compare = tarCompare(tarball, dest)
    return { entries, seconds: round2(extract.seconds), tree_matches: compare === undefined, ...(compare ? { compare_differences: compare } : {}) }
  },
}

/**
 * `tar --compare` of the tree against the tarball: undefined when they match,
 * else what differs, counted by kind ("Mode differs ×57"). The harness fails
 * the workload on s0fs or local disk over any difference; a compared tool's
 * differences are part of its report (rclone mount keeps no file modes).
 */
function tarCompare(tarball: string, dest: string): string | undefined {
  const r = spawnSync('tar', ['--compare', '-f', tarball, '-C', dest], { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024, timeout: 900_000 })
  if (r.status === 0) return undefined
  const kinds = new Map<string, number>()
  for (const line of `${r.stdout}\n${r.stderr}`.split('\n')) {
    // GNU tar's words: "path: Mode differs", "path: Contents differ", "path: Not linked to x", "tar: path: Warning: Cannot stat: …".
    const kind = /Cannot stat/.test(line) ? 'missing' : /: Not linked to /.test(line) ? 'Not linked' : /: ([A-Za-z ]+ differs?)$/.exec(line)?.[1]
    if (kind) kinds.set(kind, (kinds.get(kind) ?? 0) + 1)
  }
  // Exit 1 is "some files differ"; anything else (or nothing recognised) is a failure of tar itself.
  if (r.status !== 1 || kinds.size === 0) throw new Error(`tar --compare failed (exit ${r.status ?? r.signal}): ${(r.stderr || r.stdout).trim().slice(-2000)}`)
  return [...kinds].map(([k, n]) => `${k} ×${n}`).join(', ')
}

function gitSource(ctx: BenchContext): { repo: string; files: number } {
  const repo = path.join(ctx.work, 'git-source')
  const files = ctx.quick ? 120 : 1200
  if (!existsSync(repo)) {
    const { tarball } = corpusTarball(ctx)
    mkdirSync(repo)
    timed('tar', ['-xf', tarball, '-C', repo])
    const env = { ...process.env, GIT_AUTHOR_NAME: 'bench', GIT_AUTHOR_EMAIL: 'bench@s0fs', GIT_COMMITTER_NAME: 'bench', GIT_COMMITTER_EMAIL: 'bench@s0fs' }
    timed('git', ['init', '-q', '-b', 'main'], { cwd: repo, env })
    // Track the first `files` regular files of the tree (sorted), so the clone has that many.
    const listed = timed('find', ['.', '-type', 'f', '-not', '-path', './.git/*'], { cwd: repo }).stdout.split('\n').filter(Boolean).sort().slice(0, files)
    for (let i = 0; i < listed.length; i += 200) timed('git', ['add', '-f', '--', ...listed.slice(i, i + 200)], { cwd: repo, env })
    timed('git', ['commit', '-q', '-m', 'benchmark corpus'], { cwd: repo, env })
  }
  return { repo, files }
}

const git: Workload = {
  name: 'git',
  summary: 'git clone of a local repository of ~1,200 files, then git status',
  async run(ctx, t, progress) {
    const { repo, files } = gitSource(ctx)
    progress('clone')
    // --no-hardlinks: on the same disk git would otherwise link objects instead of copying them.
    const clone = timed('git', ['clone', '-q', '--no-hardlinks', repo, path.join(t.dir, 'clone')])
    progress('status')
    const status = timed('git', ['status', '--porcelain'], { cwd: path.join(t.dir, 'clone') })
    if (status.stdout.trim() !== '') throw new Error(`git status after clone is not clean:\n${status.stdout.slice(0, 500)}`)
    return { files, clone_seconds: round2(clone.seconds), status_seconds: round2(status.seconds) }
  },
}

function fioJob(file: string, rw: 'randread' | 'randwrite', seconds: number, sizeMiB: number): number {
  const out = timed('fio', [
    `--name=${rw}`,
    `--filename=${file}`,
    `--size=${sizeMiB}M`,
    '--bs=4k',
    `--rw=${rw}`,
    '--ioengine=psync',
    '--time_based',
    `--runtime=${seconds}`,
    '--output-format=json',
  ]).stdout
  const job = (JSON.parse(out.slice(out.indexOf('{'))) as { jobs: { read: { iops: number }; write: { iops: number } }[] }).jobs[0]
  return Math.round(rw === 'randread' ? job.read.iops : job.write.iops)
}

const fio: Workload = {
  name: 'fio',
  summary: 'fio 4 KiB random writes, then random reads, on a 128 MiB file (20 s each, psync); random writes again with the kernel writeback cache',
  async run(ctx, t, progress) {
    const seconds = ctx.quick ? 2 : 20
    const size = ctx.quick ? 16 : 128
    const file = path.join(t.dir, 'fio.bin')
    progress('random write')
    const write = fioJob(file, 'randwrite', seconds, size)
    progress('random read')
    await t.cold()
    const read = fioJob(file, 'randread', seconds, size)
    // Opt-in mode (s0fs mount --writeback-cache, rclone --write-back-cache): the kernel batches the writes.
    // Local disk has its page cache either way; it runs the same job again for the ratio.
    progress('random write, writeback cache')
    await t.cold({ writebackCache: true })
    const writeback = fioJob(file, 'randwrite', seconds, size)
    return { randwrite_iops: write, randread_iops: read, randwrite_writeback_cache_iops: writeback }
  },
}

const JFS_PY = String.raw`
import os, sys, time
root, step, big, block, nsmall, small = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
names = [os.path.join(root, 'small', 'f%03d' % i) for i in range(nsmall)]
# Every block and file its own random bytes, made before the clock starts: juicefs bench writes one buffer
# over and over, which s0fs would store once (deduplicated) — no measure of writing 1 GiB.
data = memoryview(os.urandom(big + nsmall * small)) if step == 'write' else None
t0 = time.perf_counter()
if step == 'write':
    fd = os.open(os.path.join(root, 'big'), os.O_WRONLY | os.O_CREAT, 0o644)
    for i in range(big // block):
        os.write(fd, data[i * block:(i + 1) * block])
    os.close(fd)
    t1 = time.perf_counter()
    os.mkdir(os.path.join(root, 'small'))
    for i, n in enumerate(names):
        fd = os.open(n, os.O_WRONLY | os.O_CREAT, 0o644)
        os.write(fd, data[big + i * small:big + (i + 1) * small])
        os.close(fd)
    print(t1 - t0, time.perf_counter() - t1)
elif step == 'read':
    fd = os.open(os.path.join(root, 'big'), os.O_RDONLY)
    while os.read(fd, block):
        pass
    os.close(fd)
    t1 = time.perf_counter()
    for n in names:
        fd = os.open(n, os.O_RDONLY)
        while os.read(fd, small):
            pass
        os.close(fd)
    print(t1 - t0, time.perf_counter() - t1)
elif step == 'stat':
    for n in names:
        os.stat(n)
    print(time.perf_counter() - t0, 0)
`

const jfsbench: Workload = {
  name: 'jfsbench',
  summary: "juicefs bench's profiles: a 1 GiB file in 1 MiB blocks, 100 files of 128 KiB, stat of them",
  async run(ctx, t, progress) {
    const big = (ctx.quick ? 64 : 1024) * MiB
    const args = (step: string) => [t.dir, step, String(big), String(MiB), '100', String(128 * 1024)]
    progress('write')
    const [bigWrite, smallWrite] = python(JFS_PY, args('write')).stdout.trim().split(' ').map(Number)
    progress('read (cold)')
    await t.cold()
    const [bigRead, smallRead] = python(JFS_PY, args('read')).stdout.trim().split(' ').map(Number)
    progress('stat (cold)')
    await t.cold()
    const [stat] = python(JFS_PY, args('stat')).stdout.trim().split(' ').map(Number)
    return {
      big_write_mib_per_s: mibPerS(big, bigWrite),
      big_read_mib_per_s: mibPerS(big, bigRead),
      small_write_files_per_s: rate(100, smallWrite),
      small_read_files_per_s: rate(100, smallRead),
      stat_files_per_s: rate(100, stat),
    }
  },
}

const meta: Workload = {
  name: 'meta',
  summary: 'snapshot and fork latency at 10k and 100k files; mount time of a 100k-file volume',
  async runOnce(ctx, progress) {
    const sizes = ctx.quick ? [1000, 5000] : [10_000, 100_000]
    const keep = path.join(ctx.work, 'meta-volume')
    mkdirSync(keep, { recursive: true })
    const figures: Figures = {}
    const results = await runMeta((line) => progress(line.trim()), sizes, keep)
    for (const r of results) {
      const k = r.files >= 1000 ? `${r.files / 1000}k` : String(r.files)
      figures[`snapshot_ms_${k}`] = r.snapshot_ms
      figures[`fork_ms_${k}`] = r.fork_ms
      figures[`commit_10_changes_pages_${k}`] = r.commit_10_changes_pages
      figures[`cold_open_first_lookup_ms_${k}`] = r.cold_open_first_lookup_ms
      figures[`peak_rss_mib_${k}`] = r.peak_rss_mib
    }
    // Mount the largest volume with the real daemon: time until the mount answers a lookup.
    progress(`mount of the ${sizes[sizes.length - 1]}-file volume`)
    const mnt = path.join(ctx.work, 'meta-mnt')
    mkdirSync(mnt, { recursive: true })
    const env: NodeJS.ProcessEnv = { ...ctx.env, S0FS_KEY_FILE: path.join(keep, 'key') }
    delete env.S0FS_PASSPHRASE
    const largest = `${sizes[sizes.length - 1] / 1000}k`
    const repoUrl = `file://${path.join(keep, 'repo')}`
    const t0 = performance.now()
    s0fs(env, ['mount', '--repo', repoUrl, 'vol', mnt, '--cache-dir', path.join(ctx.work, 'meta-portal')])
    statSync(path.join(mnt, 'dir42', 'file-742.txt'))
    figures[`mount_ms_${largest}`] = Math.round(performance.now() - t0)
    // Snapshot and fork of the mounted volume while it has a small dirty set (10 new files): the daemon commits first.
    progress(`snapshot and fork of the mounted ${largest}-file volume`)
    const socket = recordPaths(ctx.runDir, canonicalMountpoint(mnt)).socket
    const repo = await Repository.open(repoUrl, { kind: 'keyfile', key: await readKeyFile(path.join(keep, 'key')) })
    try {
      const dirty = (tag: string) => {
        for (let i = 0; i < 10; i++) writeFileSync(path.join(mnt, 'dir7', `${tag}-${i}.txt`), `dirty ${tag} ${i}\n`)
      }
      dirty('snap')
      let t = performance.now()
      await controlRequest(socket, { op: 'snapshot', name: `mounted-snap-${process.pid}` })
      figures[`mounted_snapshot_ms_${largest}`] = round2(performance.now() - t)
      dirty('fork')
      t = performance.now()
      await controlRequest(socket, { op: 'commit' })
      await repo.fork('vol', `mounted-fork-${process.pid}`)
      figures[`mounted_fork_ms_${largest}`] = round2(performance.now() - t)
    } finally {
      await repo.close()
      s0fs(env, ['umount', mnt])
    }
    return figures
  },
}

export const WORKLOADS: Workload[] = [seq, small, tar, git, fio, meta, jfsbench]

function round2(x: number): number {
  return Math.round(x * 100) / 100
}
