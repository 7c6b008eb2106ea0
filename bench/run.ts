/**
 * `s0fs bench` / `npm run bench`: mounts a fresh volume per workload, runs the
 * workload on it and on a plain local directory in the same run (and, with
 * --compare rclone, on an rclone mount of a local directory), and writes
 * report.json, report.md and ratios.svg to --out. Progress goes to stderr
 * (one rewritten line on a terminal, plain lines otherwise); the table (or,
 * with --json, the report) goes to stdout.
 */
import { execFileSync } from 'node:child_process'
import { mkdirSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { parseArgs } from 'node:util'
import { ProgressLine } from '../src/cli/progress.js'
import { LocalTarget, prepareContext, RcloneTarget, removeWork, S0fsTarget, type BenchContext, type FinishInfo, type RequestCounts, type Target } from './harness.js'
import { runMicro } from './micro.js'
import { checkTargets, combineRounds, markdown, ratios, roundRatios, svgChart, type ComparedTool, type Report, type WorkloadReport } from './report.js'
import { WORKLOADS, type Figures, type Workload } from './workloads.js'

const micro: Workload = {
  name: 'micro',
  summary: 'store pipeline micro-benchmarks (chunk, hash, encrypt, encode, pack; MiB/s, in-process)',
  async runOnce(_ctx, progress) {
    const figures: Figures = {}
    for (const r of await runMicro((line) => progress(line.trim()))) figures[`${r.key}_mib_per_s`] = r.mib_per_s
    return figures
  },
}

const ALL: Workload[] = [micro, ...WORKLOADS]

/** The tools `--compare` knows. */
const COMPARE_TOOLS = ['rclone'] as const
type CompareTool = (typeof COMPARE_TOOLS)[number]

const RCLONE_NOTE =
  "rclone's defaults are kept: with a full VFS cache, writes and fsync reach rclone's cache on local disk, and a file is uploaded to the backing store " +
  '`--vfs-write-back` (5 s) after its last close, so rclone\'s write figures stop the clock before the data is in the backing store. ' +
  "Before each cold step and at the end the harness waits, untimed, until rclone reports no upload queued or in progress: `writeback_wait_seconds` is that wait's total. " +
  "s0fs's write figures stop the clock when fsync returns, i.e. when the data is in its local log (default `--sync local`); its commit to the bucket is likewise untimed (the harness commits before each cold step). " +
  "rclone's cold steps remount it (and drop the page cache); reads from the bucket (`read_cold_bucket`) also empty rclone's VFS cache first, as s0fs's portal is emptied."

const USAGE = `Usage: s0fs bench [--repo URL] [--workload NAMES] [--rounds N] [--compare TOOLS] [--mount-options OPTS] [--out DIR] [--json] [--quick]

Runs each workload on a fresh s0fs volume and on a local directory in the same
run, and prints s0fs's figures next to local disk's.

  --repo URL        repository to benchmark (default: a new file:// repository in a temporary directory)
  --workload NAMES  comma-separated, from: ${ALL.map((w) => w.name).join(', ')} (default: all)
  --rounds N        run each workload N times, s0fs and local disk back to back in every round, and report
                    medians with the rounds' range (peaks: the largest); default 1. This VM's timings swing
                    by a third from one hour to the next: 3 or 5 rounds make a figure worth comparing.
                    (micro and meta run once.)
  --compare TOOLS   also run each workload that has a local-disk counterpart on these, comma-separated, from:
                    rclone (rclone mount of a directory on the local disk, --vfs-cache-mode full;
                    needs the rclone command: apt-get install rclone)
  --mount-options OPTS
                    add these options to every s0fs mount, space-separated
                    (e.g. --mount-options=--no-xattrs); the report records them
  --out DIR         where report.json, report.md and ratios.svg go (default: ./bench-results)
  --json            print the report as JSON instead of the table
  --quick           small sizes and short runs: checks the harness, measures nothing meaningful
  -h, --help        show this help

Workloads:
${ALL.map((w) => `  ${w.name.padEnd(9)} ${w.summary}`).join('\n')}

Cold steps drop the kernel's page cache (root only). A workload that a --compare
tool cannot run is reported as such, not as a failure. Exit status: 0 done,
2 bad arguments or a --compare tool not installed, 1 a workload failed.
`

export async function runBench(argv: string[]): Promise<number> {
  let values: { repo?: string; workload?: string; rounds?: string; compare?: string; 'mount-options'?: string; out?: string; json?: boolean; quick?: boolean; help?: boolean }
  try {
    values = parseArgs({
      args: argv,
      options: {
        repo: { type: 'string' },
        workload: { type: 'string' },
        rounds: { type: 'string' },
        compare: { type: 'string' },
        'mount-options': { type: 'string' },
        out: { type: 'string' },
        json: { type: 'boolean', default: false },
        quick: { type: 'boolean', default: false },
        help: { type: 'boolean', short: 'h' },
      },
    }).values
  } catch (err) {
    process.stderr.write(`s0fs bench: ${(err as Error).message}\n${USAGE}`)
    return 2
  }
  if (values.help) {
    process.stdout.write(USAGE)
    return 0
  }
  const names = values.workload ? values.workload.split(',').map((s) => s.trim()) : ALL.map((w) => w.name)
  const unknown = names.filter((n) => !ALL.some((w) => w.name === n))
  if (unknown.length) {
    process.stderr.write(`s0fs bench: unknown workload ${unknown.map((n) => JSON.stringify(n)).join(', ')} (known: ${ALL.map((w) => w.name).join(', ')})\n`)
    return 2
  }
  const selected = ALL.filter((w) => names.includes(w.name))
  const rounds = values.rounds === undefined ? 1 : Number(values.rounds)
  if (!Number.isInteger(rounds) || rounds < 1 || rounds > 20) {
    process.stderr.write(`s0fs bench: --rounds takes a whole number from 1 to 20, not ${JSON.stringify(values.rounds)}\n`)
    return 2
  }
  const compare = (values.compare ?? '')
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean)
  const unknownTools = compare.filter((n) => !(COMPARE_TOOLS as readonly string[]).includes(n))
  if (unknownTools.length) {
    process.stderr.write(`s0fs bench: unknown --compare tool ${unknownTools.map((n) => JSON.stringify(n)).join(', ')} (known: ${COMPARE_TOOLS.join(', ')})\n`)
    return 2
  }
  const mountOptions = (values['mount-options'] ?? '').split(/\s+/).filter(Boolean)
  if (mountOptions.length && !mountOptions[0].startsWith('--')) {
    process.stderr.write(`s0fs bench: --mount-options takes s0fs mount options such as --no-xattrs, not ${JSON.stringify(mountOptions[0])}\n`)
    return 2
  }
  const compared: Report['compared'] = {}
  if (compare.includes('rclone')) {
    const version = RcloneTarget.version()
    if (!version) {
      process.stderr.write('s0fs bench: --compare rclone needs the rclone command, which is not installed here (Debian/Ubuntu: apt-get install rclone)\n')
      return 2
    }
    compared.rclone = { version, mount: RcloneTarget.COMMAND, backing: "a plain directory on the same local disk as s0fs's file:// repository", note: RCLONE_NOTE } satisfies ComparedTool
  }
  const out = path.resolve(values.out ?? 'bench-results')
  const progress = new ProgressLine(process.stderr)
  const ctx = prepareContext({ repo: values.repo, quick: values.quick ?? false, mountOptions })
  const report: Report = {
    date: new Date().toISOString(),
    machine: { cpus: os.availableParallelism(), memory_gib: Math.round(os.totalmem() / 2 ** 30), kernel: os.release(), node: process.version },
    repository: values.repo ?? 'file:// (temporary)',
    ...(rounds > 1 ? { rounds } : {}),
    ...(mountOptions.length ? { mount_options: mountOptions } : {}),
    page_cache_dropped: ctx.canDropCaches,
    workloads: {},
    targets: [],
    ...(compare.length ? { compared } : {}),
  }
  let failed = false
  try {
    for (const [i, w] of selected.entries()) {
      const step = (round: number) => (side: string) => (s: string) =>
        progress.update(`[${i + 1}/${selected.length}] ${w.name}${rounds > 1 && !w.runOnce ? ` · round ${round}/${rounds}` : ''} · ${side} · ${s}`)
      try {
        report.workloads[w.name] = await runRounds(ctx, w, rounds, step, compare as CompareTool[], (line) => progress.line(line))
      } catch (err) {
        failed = true
        progress.line(`${w.name}: FAILED: ${(err as Error).message}`)
      }
    }
  } finally {
    progress.done()
    removeWork(ctx)
  }
  report.targets = checkTargets(report)
  mkdirSync(out, { recursive: true })
  const md = markdown(report)
  writeFileSync(path.join(out, 'report.json'), JSON.stringify(report, null, 2) + '\n')
  writeFileSync(path.join(out, 'report.md'), md)
  writeFileSync(path.join(out, 'ratios.svg'), svgChart(report))
  process.stdout.write(values.json ? JSON.stringify(report, null, 2) + '\n' : md)
  process.stderr.write(`report written to ${out}/{report.json,report.md,ratios.svg}\n`)
  return failed ? 1 : 0
}

/** Runs a workload `rounds` times (once if it runs only on s0fs) and combines the rounds (see combineRounds). */
async function runRounds(
  ctx: BenchContext,
  w: Workload,
  rounds: number,
  step: (round: number) => (side: string) => (s: string) => void,
  compare: CompareTool[],
  note: (line: string) => void,
): Promise<WorkloadReport> {
  if (w.runOnce || rounds === 1) return runWorkload(ctx, w, step(1), compare, note)
  const each: WorkloadReport[] = []
  for (let r = 1; r <= rounds; r++) each.push(await runWorkload(ctx, w, step(r), compare, note))
  const s0fs = each.map((e) => e.s0fs)
  const local = each.map((e) => e.local ?? {})
  const rclone = each.flatMap((e) => (e.rclone ? [e.rclone] : []))
  const report: WorkloadReport = {
    summary: w.summary,
    s0fs: combineRounds(s0fs),
    local: combineRounds(local),
    requests: each[0].requests && combineRounds(each.map((e) => ({ ...e.requests! }))),
    ratio_to_local: roundRatios(s0fs, local),
    rounds: { s0fs, local, ...(rclone.length ? { rclone } : {}) },
  }
  if (rclone.length === rounds) {
    report.rclone = combineRounds(rclone)
    report.rclone_ratio_to_local = roundRatios(rclone, local)
  }
  const rcloneError = each.find((e) => e.rclone_error)?.rclone_error
  if (rcloneError) report.rclone_error = rcloneError
  return report
}

async function runWorkload(
  ctx: BenchContext,
  w: Workload,
  step: (side: string) => (s: string) => void,
  compare: CompareTool[],
  note: (line: string) => void,
): Promise<WorkloadReport> {
  if (w.runOnce) return { summary: w.summary, s0fs: await w.runOnce(ctx, step('s0fs')) }
  const s0fsTarget = await S0fsTarget.mount(ctx, w.name)
  const { figures: s0fs, requests } = await measureOn(ctx, w, s0fsTarget, step('s0fs'))
  const { figures: local } = await measureOn(ctx, w, new LocalTarget(ctx, w.name), step('local'))
  // s0fs and local disk must produce a tree equal to the source; a compared tool's differences are reported instead.
  for (const [side, f] of [['s0fs', s0fs], ['local', local]] as const) {
    if (f.tree_matches === false) throw new Error(`the tree on ${side} differs from its source: ${String(f.compare_differences)}`)
  }
  if (w.name === 'small' && requests && typeof s0fs.files === 'number') {
    s0fs.puts_per_1000_files = Math.round((requests.put / s0fs.files) * 1000 * 10) / 10
  }
  const report: WorkloadReport = { summary: w.summary, s0fs, local, requests, ratio_to_local: ratios(s0fs, local) }
  if (compare.includes('rclone')) {
    try {
      const { figures } = await measureOn(ctx, w, await RcloneTarget.mount(ctx, w.name), step('rclone'))
      report.rclone = figures
      report.rclone_ratio_to_local = ratios(figures, local)
    } catch (err) {
      // A compared tool that cannot run a workload is a result, not a failure of the benchmark.
      report.rclone_error = (err as Error).message
      note(`${w.name}: rclone could not run it: ${report.rclone_error}`)
    }
  }
  return report
}

async function measureOn(ctx: BenchContext, w: Workload, t: Target, progress: (s: string) => void): Promise<{ figures: Figures; requests?: RequestCounts }> {
  let figures: Figures = {}
  let failure: unknown
  // Start with no dirty pages left by the measurement before (a 512 MiB file, its log and portal copies):
  // steps that end in sync(), as small's create does, would otherwise pay for their writeback.
  execFileSync('sync')
  try {
    figures = await w.run!(ctx, t, progress)
  } catch (err) {
    failure = err
  }
  // Always unmount (and count), even when the workload failed.
  const extra = await t.finish().catch((err: unknown) => {
    failure ??= err
    return {}
  })
  if (failure) throw failure
  const { requests, daemon_peak_rss_mib, daemon_idle_rss_mib, writeback_wait_seconds } = extra as FinishInfo
  if (daemon_peak_rss_mib !== undefined) figures.daemon_peak_rss_mib = daemon_peak_rss_mib
  if (daemon_idle_rss_mib !== undefined) figures.daemon_idle_rss_mib = daemon_idle_rss_mib
  if (writeback_wait_seconds !== undefined) figures.writeback_wait_seconds = writeback_wait_seconds
  return { figures, requests }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  process.exitCode = await runBench(process.argv.slice(2))
}
