/**
 * Long-form reliability runs (issue #7), on a temporary file:// repository
 * with the real mount daemon:
 *
 *   npm run soak -- crash --trials 100                     kill -9 of the daemon during random writes
 *   npm run soak -- crash --at commit-before-head --trials 20   the daemon dies inside a commit
 *   npm run soak -- crash --at gc --trials 10              GC dies between its steps
 *   npm run soak -- load --procs 8 --seconds 300           mixed work from 8 processes; RSS and portal sampled
 *
 * Each trial checks what must have survived (every fsynced byte and rename;
 * every file of every volume after a GC crash), prints a line, and the run
 * ends with a summary (--json for machine output). Exit 0 only with no
 * loss and no error.
 */
import { spawn, spawnSync } from 'node:child_process'
import { createHash, randomBytes } from 'node:crypto'
import { mkdirSync, mkdtempSync, promises as fsp, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { controlRequest } from '../src/mount/control.js'
import { canonicalMountpoint, readRecord } from '../src/mount/registry.js'
import { processAlive } from '../src/util/process.js'
import { checkSurvivors } from './crash-check.js'
import { runPythonJson } from './python.js'

const ROOT = fileURLToPath(new URL('../..', import.meta.url))
const BIN = path.join(ROOT, 'bin/s0fs.js')
const CRASH_WRITER = path.join(ROOT, 'test/fixtures/crash-writer.py')
const LOAD_WORKER = path.join(ROOT, 'test/fixtures/load-worker.py')
const COMMIT_POINTS = ['commit-before-head', 'commit-before-log-drop']
/**
 * Bytes of every regular file under a portal directory (logs, cached
 * windows, windows being written): what its cap limits, measured on disk
 * rather than taken from the daemon's own accounting.
 */
export async function portalDiskBytes(dir: string): Promise<number> {
  let total = 0
  const entries = await fsp.readdir(dir, { recursive: true, withFileTypes: true }).catch(() => [])
  for (const entry of entries) {
    if (!entry.isFile()) continue
    const st = await fsp.lstat(path.join(entry.parentPath, entry.name)).catch(() => undefined)
    total += st?.size ?? 0
  }
  return total
}
const GC_POINTS = ['gc-before-delete', 'gc-before-index']

interface Env {
  work: string
  repo: string
  env: NodeJS.ProcessEnv
  runDir: string
  /** Added to every mount (--writeback-cache). */
  mountArgs: string[]
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

function setup(mountArgs: string[]): Env {
  const work = mkdtempSync(path.join(tmpdir(), 's0fs-soak-'))
  const repo = `file://${path.join(work, 'repo')}`
  const env: NodeJS.ProcessEnv = { ...process.env, HOME: work, XDG_RUNTIME_DIR: '', XDG_CACHE_HOME: '', XDG_DATA_HOME: '', S0FS_KEY_FILE: path.join(work, 'key') }
  delete env.S0FS_PASSPHRASE
  delete env.S0FS_CRASH_AT
  const e: Env = { work, repo, env, runDir: path.join(work, '.cache', 's0fs', 'run'), mountArgs }
  s0fs(e, ['init'])
  return e
}

function s0fs(e: Env, args: string[], extraEnv: NodeJS.ProcessEnv = {}, input?: Buffer): { code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [BIN, ...args, '--repo', e.repo], { env: { ...e.env, ...extraEnv }, input, encoding: 'buffer', maxBuffer: 256 * 1024 * 1024, timeout: 600_000 })
  return { code: r.status, signal: r.signal, stdout: r.stdout?.toString() ?? '', stderr: r.stderr?.toString() ?? '' }
}

/** The portal every mount of the run shares. */
const portalOf = (e: Env): string => path.join(e.work, 'portal')

function must(e: Env, args: string[], extraEnv: NodeJS.ProcessEnv = {}): string {
  const r = s0fs(e, args, extraEnv)
  if (r.code !== 0) throw new Error(`s0fs ${args.join(' ')}: exit ${r.code ?? r.signal}: ${r.stderr}`)
  return r.stdout
}

/** Mounts and returns the daemon's pid. */
async function mount(e: Env, volume: string, mnt: string, args: string[] = [], extraEnv: NodeJS.ProcessEnv = {}): Promise<number> {
  try {
    mkdirSync(mnt, { recursive: true })
  } catch (err) {
    // A mount left dead by the killed daemon (ECONNABORTED when a request was in flight): `s0fs mount` cleans it up.
    if (!['ENOTCONN', 'ECONNABORTED'].includes((err as NodeJS.ErrnoException).code ?? '')) throw err
  }
  must(e, ['mount', volume, mnt, '--create', '--cache-dir', portalOf(e), ...e.mountArgs, ...args], extraEnv)
  const record = await readRecord(e.runDir, canonicalMountpoint(mnt))
  if (!record) throw new Error(`no mount record for ${mnt}`)
  return record.pid
}

function forceUnmount(mnt: string): void {
  spawnSync('umount', ['-l', mnt], { stdio: 'ignore' })
}

/** A seeded PRNG, so a failing trial can be repeated with --seed. */
function prng(seed: number): () => number {
  let s = seed >>> 0 || 1
  return () => {
    s ^= s << 13
    s ^= s >>> 17
    s ^= s << 5
    return (s >>> 0) / 0x1_0000_0000
  }
}

interface TrialResult {
  trial: number
  /** What the checks found lost or torn (a loss). */
  problems: string[]
  /** The trial could not run to its check (the harness or the system failed); not a loss, but not a pass either. */
  error?: string
  detail: string
}

// --- crash trials -----------------------------------------------------------------------

async function writeTrial(e: Env, trial: number, rnd: () => number, point?: string): Promise<TrialResult> {
  const mnt = path.join(e.work, 'mnt')
  const crashEnv = point ? { S0FS_CRASH_AT: `${point}:${1 + Math.floor(rnd() * 3)}` } : {}
  const pid = await mount(e, 'crash', mnt, point ? ['--commit-interval', '1'] : [], crashEnv)
  const dir = path.join(mnt, `trial-${trial}`)
  const log = path.join(e.work, `trial-${trial}.log`)
  writeFileSync(log, '')
  const writer = spawn('python3', [CRASH_WRITER, dir, log, String(Math.floor(rnd() * 1e9)), '60'], { stdio: ['ignore', 'pipe', 'pipe'] })
  const exited = new Promise<void>((resolve) => writer.on('close', () => resolve()))
  let detail: string
  if (!point) {
    const after = 500 + Math.floor(rnd() * 3000)
    await sleep(after)
    process.kill(pid, 'SIGKILL')
    detail = `killed after ${after} ms`
  } else {
    // The daemon kills itself at the crash point (within a few commits); give up after 60 s.
    const deadline = Date.now() + 60_000
    while (processAlive(pid) && Date.now() < deadline) await sleep(100)
    detail = processAlive(pid) ? `${crashEnv.S0FS_CRASH_AT} not reached in 60 s; killed` : `died at ${crashEnv.S0FS_CRASH_AT}`
    if (processAlive(pid)) process.kill(pid, 'SIGKILL')
  }
  writer.kill('SIGKILL')
  await exited
  const logText = readFileSync(log, 'utf8')
  const synced = logText.split('\n').filter((l) => l.startsWith('sync')).length
  await mount(e, 'crash', mnt) // cleans up the dead mount, replays the log
  const problems = checkSurvivors(dir, logText)
  must(e, ['umount', mnt])
  return { trial, problems, detail: `${detail}; ${synced} fsynced states checked` }
}

function hashTree(root: string): Map<string, string> {
  const out = new Map<string, string>()
  const visit = (dir: string, rel: string) => {
    for (const name of readdirSync(dir).sort()) {
      const full = path.join(dir, name)
      const st = statSync(full)
      if (st.isDirectory()) visit(full, `${rel}${name}/`)
      else out.set(rel + name, createHash('sha256').update(readFileSync(full)).digest('hex'))
    }
  }
  visit(root, '')
  return out
}

function compareTrees(want: Map<string, string>, got: Map<string, string>, label: string): string[] {
  const problems: string[] = []
  for (const [name, sha] of want) {
    if (!got.has(name)) problems.push(`${label}: ${name} missing`)
    else if (got.get(name) !== sha) problems.push(`${label}: ${name} differs`)
  }
  return problems
}

async function gcTrial(e: Env, trial: number, rnd: () => number): Promise<TrialResult> {
  const src = path.join(e.work, `gc-src-${trial}`)
  for (let d = 0; d < 4; d++) {
    mkdirSync(path.join(src, `d${d}`), { recursive: true })
    for (let f = 0; f < 6; f++) {
      writeFileSync(path.join(src, `d${d}`, `f${f}`), randomBytes([100, 5000, 300_000, 1_500_000][Math.floor(rnd() * 4)]))
    }
  }
  const vol = `gc-${trial}`
  must(e, ['volume', 'create', vol])
  must(e, ['put', src, `${vol}:/`])
  must(e, ['snapshot', 'create', vol, `${vol}-snap`])
  must(e, ['fork', `${vol}-snap`, `${vol}-fork`])
  must(e, ['rm', '-r', `${vol}:/gc-src-${trial}/d0`, `${vol}:/gc-src-${trial}/d1`])
  must(e, ['rm', '-r', `${vol}-fork:/gc-src-${trial}/d2`])
  must(e, ['snapshot', 'delete', `${vol}-snap`])
  const expected = (v: string) => {
    const out = path.join(e.work, `gc-get-${trial}-${v}-${Math.floor(rnd() * 1e9)}`)
    must(e, ['get', `${v}:/`, out])
    return hashTree(out)
  }
  const before = { vol: expected(vol), fork: expected(`${vol}-fork`) }
  const point = GC_POINTS[Math.floor(rnd() * GC_POINTS.length)]
  const crashed = s0fs(e, ['gc', '--grace', '0', '--repack-below', '0.9'], { S0FS_CRASH_AT: point })
  const problems: string[] = []
  if (crashed.signal !== 'SIGKILL') problems.push(`gc did not reach ${point} (exit ${crashed.code}): ${crashed.stderr.trim()}`)
  const check = (label: string) => {
    const fsck = s0fs(e, ['fsck', '--read-data'])
    if (fsck.code !== 0) problems.push(`${label}: fsck exit ${fsck.code}: ${fsck.stdout.split('\n').filter((l) => l.startsWith('DAMAGED')).join('; ')}`)
    problems.push(...compareTrees(before.vol, expected(vol), `${label} ${vol}`), ...compareTrees(before.fork, expected(`${vol}-fork`), `${label} ${vol}-fork`))
  }
  check(`after the crash at ${point}`)
  const again = s0fs(e, ['gc', '--grace', '0'])
  if (again.code !== 0) problems.push(`the next gc failed: exit ${again.code}: ${again.stderr.trim()}`)
  check('after the next gc')
  rmSync(src, { recursive: true, force: true })
  return { trial, problems, detail: `gc killed at ${point}; fsck and ${before.vol.size + before.fork.size} files checked twice` }
}

async function crash(e: Env, trials: number, at: string | undefined, seed: number, json: boolean): Promise<number> {
  const results: TrialResult[] = []
  const started = Date.now()
  for (let t = 1; t <= trials; t++) {
    const rnd = prng(seed + t * 7919)
    let r: TrialResult
    try {
      if (at === 'gc') r = await gcTrial(e, t, rnd)
      else r = await writeTrial(e, t, rnd, at === 'commit' ? COMMIT_POINTS[Math.floor(rnd() * COMMIT_POINTS.length)] : at)
    } catch (err) {
      forceUnmount(path.join(e.work, 'mnt'))
      r = { trial: t, problems: [], error: (err as Error).message, detail: '' }
    }
    results.push(r)
    if (!json) process.stderr.write(`trial ${t}/${trials}: ${r.problems.length ? `LOSS: ${r.problems.join('; ')}` : r.error ? `ERROR (not checked): ${r.error}` : 'ok'} (${r.detail})\n`)
  }
  const losses = results.filter((r) => r.problems.length > 0).length
  const errors = results.filter((r) => r.error).length
  const summary = { kind: 'crash', at: at ?? 'random', trials, losses, errors, seconds: Math.round((Date.now() - started) / 1000), seed, failures: results.filter((r) => r.problems.length || r.error) }
  if (json) process.stdout.write(JSON.stringify(summary, null, 2) + '\n')
  else process.stdout.write(`crash trials (${summary.at}): ${trials}, losses: ${losses}, trials that could not run: ${errors}, ${summary.seconds} s (seed ${seed})\n`)
  return losses === 0 && errors === 0 ? 0 : 1
}

// --- load ---------------------------------------------------------------------------------

async function load(e: Env, procs: number, seconds: number, json: boolean): Promise<number> {
  const mnt = path.join(e.work, 'mnt')
  const capBytes = 256 * 1024 * 1024
  const portalDir = portalOf(e)
  await mount(e, 'load', mnt, ['--cache-size', '256M'])
  const socket = (await readRecord(e.runDir, canonicalMountpoint(mnt)))!.socket
  const samples: { t: number; rss: number; portal: number; dirty: number }[] = []
  let portalDiskMax = 0
  const started = Date.now()
  let sampling = true
  const sampler = (async () => {
    while (sampling) {
      try {
        const s = await controlRequest(socket, { op: 'status' })
        // The portal is the log and the segment cache together: the cap covers both.
        samples.push({ t: (Date.now() - started) / 1000, rss: Number(s.rssBytes), portal: Number(s.cacheBytes) + Number(s.walBytes), dirty: Number(s.dirtyBytes) })
      } catch {
        // the daemon is busy or going away; the next sample will tell
      }
      await sleep(1000)
    }
  })()
  // The files themselves, sampled more often than the daemon's figures.
  const diskSampler = (async () => {
    while (sampling) {
      portalDiskMax = Math.max(portalDiskMax, await portalDiskBytes(portalDir))
      await sleep(200)
    }
  })()
  type WorkerResult = { ops: number; errors: number; first_errors: string[]; files: Record<string, string> }
  const workers = Array.from({ length: procs }, async (_, i) => {
    const result = await runPythonJson<WorkerResult>(LOAD_WORKER, [path.join(mnt, `worker-${i}`), String(1000 + i), String(seconds)], `worker ${i}`)
    return { ...result, dir: `worker-${i}` }
  })
  const done = await Promise.all(workers)
  sampling = false
  await Promise.all([sampler, diskSampler])
  must(e, ['umount', mnt])
  // Everything the workers left must read back the same after a remount.
  await mount(e, 'load', mnt)
  let mismatched = 0
  let checked = 0
  for (const w of done) {
    for (const [name, sha] of Object.entries(w.files)) {
      checked++
      const got = createHash('sha256').update(readFileSync(path.join(mnt, w.dir, name))).digest('hex')
      if (got !== sha) mismatched++
    }
  }
  must(e, ['umount', mnt])
  const half = samples.filter((s) => s.t <= seconds / 2)
  const late = samples.filter((s) => s.t > seconds / 2)
  const maxOf = (xs: typeof samples, k: 'rss' | 'portal' | 'dirty') => Math.max(0, ...xs.map((s) => s[k]))
  const mib = (n: number) => Math.round(n / 1024 / 1024)
  const summary = {
    kind: 'load',
    procs,
    seconds,
    ops: done.reduce((n, w) => n + w.ops, 0),
    errors: done.reduce((n, w) => n + w.errors, 0),
    first_errors: done.flatMap((w) => w.first_errors).slice(0, 5),
    files_checked_after_remount: checked,
    files_mismatched: mismatched,
    rss_mib: { first_half_max: mib(maxOf(half, 'rss')), second_half_max: mib(maxOf(late, 'rss')), max: mib(maxOf(samples, 'rss')) },
    portal_mib: { max: mib(maxOf(samples, 'portal')), on_disk_max: mib(portalDiskMax), cap: mib(capBytes) },
    portal_bytes: { max: maxOf(samples, 'portal'), on_disk_max: portalDiskMax, cap: capBytes },
    samples: samples.length,
  }
  // Admission keeps every write's log record under the cap, with the cache making way: no slack.
  const withinCap = summary.portal_bytes.max <= capBytes && portalDiskMax <= capBytes
  const ok = summary.errors === 0 && mismatched === 0 && withinCap
  if (json) process.stdout.write(JSON.stringify(summary, null, 2) + '\n')
  else {
    process.stdout.write(
      `load: ${procs} processes × ${seconds} s: ${summary.ops} operations, ${summary.errors} errors; ${checked} files read back after a remount, ${mismatched} differ\n` +
        `daemon RSS: max ${summary.rss_mib.max} MiB (first half ${summary.rss_mib.first_half_max}, second half ${summary.rss_mib.second_half_max}); portal max ${summary.portal_mib.max} MiB (files on disk ${summary.portal_mib.on_disk_max} MiB) of a ${summary.portal_mib.cap} MiB cap\n`,
    )
    for (const m of summary.first_errors) process.stdout.write(`  error: ${m}\n`)
  }
  return ok ? 0 : 1
}

// --- entry ----------------------------------------------------------------------------------

const USAGE = `Usage: npm run soak -- crash [--trials N] [--at commit|gc|POINT] [--seed N] [--writeback-cache] [--json]
       npm run soak -- load [--procs N] [--seconds N] [--writeback-cache] [--json]
  --writeback-cache   mount with the kernel's writeback cache (s0fs mount --writeback-cache)
`

export async function runSoak(argv: string[]): Promise<number> {
  let parsed
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        trials: { type: 'string' },
        at: { type: 'string' },
        seed: { type: 'string' },
        procs: { type: 'string' },
        seconds: { type: 'string' },
        json: { type: 'boolean' },
        keep: { type: 'boolean' },
        'writeback-cache': { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
      },
    })
  } catch (err) {
    process.stderr.write(`soak: ${(err as Error).message}\n${USAGE}`)
    return 2
  }
  const { values, positionals } = parsed
  if (values.help) {
    process.stdout.write(USAGE)
    return 0
  }
  const kind = positionals[0]
  const int = (v: string | undefined, d: number, what: string) => {
    const n = v === undefined ? d : Number(v)
    if (!Number.isInteger(n) || n <= 0) throw new Error(`--${what} must be a positive integer`)
    return n
  }
  if (kind !== 'crash' && kind !== 'load') {
    process.stderr.write(`soak: ${kind ? `unknown run ${JSON.stringify(kind)}` : 'missing run'}\n${USAGE}`)
    return 2
  }
  const at = values.at
  if (at && at !== 'commit' && at !== 'gc' && !COMMIT_POINTS.includes(at)) {
    process.stderr.write(`soak: --at must be commit, gc, ${COMMIT_POINTS.join(' or ')}\n`)
    return 2
  }
  const e = setup(values['writeback-cache'] ? ['--writeback-cache'] : [])
  try {
    if (kind === 'crash') return await crash(e, int(values.trials, 10, 'trials'), at, int(values.seed, Date.now() % 1_000_000, 'seed'), values.json === true)
    return await load(e, int(values.procs, 8, 'procs'), int(values.seconds, 300, 'seconds'), values.json === true)
  } finally {
    forceUnmount(path.join(e.work, 'mnt'))
    if (!values.keep) rmSync(e.work, { recursive: true, force: true })
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  process.exitCode = await runSoak(process.argv.slice(2))
}
