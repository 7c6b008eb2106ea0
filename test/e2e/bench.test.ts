import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { runCli } from '../helpers/cli.js'

/**
 * `s0fs bench` end to end, at --quick sizes: it mounts real volumes, runs
 * the real tools on them and on local disk, and writes the report. What is
 * checked is the harness (keys, pairing, files, exit codes), never a speed:
 * speed targets live in the benchmark itself.
 */
/**
 * Runs `s0fs bench ARGS --out DIR --json` into a fresh directory, checks it
 * succeeded, and hands `check` the report with its stderr and directory.
 */
async function benchInto(prefix: string, args: string[], check: (report: any, stderr: string, dir: string) => void): Promise<void> {
  const dir = mkdtempSync(path.join(tmpdir(), prefix))
  try {
    const r = await runCli(['bench', ...args, '--out', dir, '--json'], { timeoutMs: 240_000 })
    expect(r.code, r.stderr).toBe(0)
    check(JSON.parse(readFileSync(path.join(dir, 'report.json'), 'utf8')), r.stderr, dir)
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}

describe('s0fs bench', () => {
  const out = mkdtempSync(path.join(tmpdir(), 's0fs-bench-out-'))
  afterAll(() => rmSync(out, { recursive: true, force: true }))

  it('runs workloads on s0fs and local disk and writes report.json, report.md and ratios.svg', async () => {
    const r = await runCli(['bench', '--quick', '--workload', 'small,tar,git', '--out', out, '--json'], { timeoutMs: 240_000 })
    expect(r.code, r.stderr).toBe(0)
    const report = JSON.parse(readFileSync(path.join(out, 'report.json'), 'utf8'))
    expect(JSON.parse(r.stdout)).toEqual(report)
    for (const side of ['s0fs', 'local']) {
      expect(report.workloads.small[side].create_files_per_s).toBeGreaterThan(0)
      expect(report.workloads.small[side].stat_files_per_s).toBeGreaterThan(0)
      expect(report.workloads.tar[side].tree_matches).toBe(true)
      expect(report.workloads.git[side].clone_seconds).toBeGreaterThan(0)
    }
    // Requests and the daemon's memory are recorded for s0fs only.
    expect(report.workloads.small.requests.put).toBeGreaterThan(0)
    expect(report.workloads.small.s0fs.daemon_peak_rss_mib).toBeGreaterThan(20)
    expect(report.workloads.small.local.daemon_peak_rss_mib).toBeUndefined()
    expect(report.workloads.tar.ratio_to_local.seconds).toBeGreaterThan(0)
    const created = report.targets.find((t: { key: string }) => t.key === 'small.s0fs.create_files_per_s')
    expect(created.measured).toBe(report.workloads.small.s0fs.create_files_per_s)
    expect(typeof created.met).toBe('boolean')
    expect(report.targets.find((t: { key: string }) => t.key === 'fio.s0fs.randwrite_iops').measured).toBeUndefined()

    const md = readFileSync(path.join(out, 'report.md'), 'utf8')
    expect(md).toMatch(/\| small \| create_files_per_s \| [\d,]+ \| [\d,]+ \| [\d.]+× \|/)
    const svg = readFileSync(path.join(out, 'ratios.svg'), 'utf8')
    expect(svg).toMatch(/^<svg /)
    expect(svg).toContain('tar.seconds')
  }, 300_000)

  it('runs a workload on an rclone mount too with --compare rclone, and reports its figures beside s0fs and local disk', async () => {
    await benchInto('s0fs-bench-rclone-', ['--quick', '--workload', 'small', '--compare', 'rclone'], (report, _stderr, dir) => {
      const small = report.workloads.small
      expect(small.rclone_error).toBeUndefined()
      for (const key of ['create_files_per_s', 'stat_files_per_s', 'read_files_per_s', 'delete_files_per_s']) {
        expect(small.rclone[key], key).toBeGreaterThan(0)
        expect(small.rclone_ratio_to_local[key], key).toBeGreaterThan(0)
        // s0fs's keys are unchanged beside rclone's.
        expect(small.s0fs[key], key).toBeGreaterThan(0)
        expect(small.ratio_to_local[key], key).toBeGreaterThan(0)
      }
      expect(small.rclone.files).toBe(small.s0fs.files)
      expect(small.rclone.daemon_peak_rss_mib).toBeGreaterThan(5)
      // rclone uploads 5 s after the last close by default: the harness waited for that before the cold steps.
      expect(small.rclone.writeback_wait_seconds).toBeGreaterThan(0)
      expect(report.compared.rclone.version).toMatch(/^rclone v\d/)
      expect(report.compared.rclone.mount).toContain('--vfs-cache-mode full')
      const md = readFileSync(path.join(dir, 'report.md'), 'utf8')
      expect(md).toContain('| workload | figure | s0fs | rclone | local disk |')
      expect(md).toMatch(/\| small \| create_files_per_s \| [\d,]+ \| [\d,]+ \| [\d,]+ \| [\d.]+× \| [\d.]+× \| [\d.]+× \|/)
      expect(readFileSync(path.join(dir, 'ratios.svg'), 'utf8')).toContain('rclone')
      // Nothing is left mounted.
      expect(readFileSync('/proc/self/mountinfo', 'utf8')).not.toContain('rclone-mnt-small')
    })
  }, 300_000)

  it('adds --mount-options to every s0fs mount and records them in the report', async () => {
    await benchInto('s0fs-bench-opts-', ['--quick', '--workload', 'tar', '--mount-options=--no-xattrs --busy-poll 0'], (report, _stderr, dir) => {
      expect(report.mount_options).toEqual(['--no-xattrs', '--busy-poll', '0'])
      expect(report.workloads.tar.s0fs.tree_matches).toBe(true)
      expect(readFileSync(path.join(dir, 'report.md'), 'utf8')).toContain('Every s0fs mount had `--no-xattrs --busy-poll 0`.')
    })
  }, 300_000)

  it('runs each workload --rounds times and reports medians, the largest peak and every round', async () => {
    await benchInto('s0fs-bench-rounds-', ['--quick', '--workload', 'small', '--rounds', '3'], (report, stderr, dir) => {
      expect(report.rounds).toBe(3)
      const small = report.workloads.small
      expect(small.rounds.s0fs).toHaveLength(3)
      expect(small.rounds.local).toHaveLength(3)
      const creates = small.rounds.s0fs.map((f: { create_files_per_s: number }) => f.create_files_per_s).sort((a: number, b: number) => a - b)
      expect(small.s0fs.create_files_per_s).toBe(creates[1])
      expect(small.s0fs.daemon_peak_rss_mib).toBe(Math.max(...small.rounds.s0fs.map((f: { daemon_peak_rss_mib: number }) => f.daemon_peak_rss_mib)))
      expect(small.ratio_to_local.create_files_per_s).toBeGreaterThan(0)
      expect(stderr).toMatch(/round 3\/3/)
      const md = readFileSync(path.join(dir, 'report.md'), 'utf8')
      expect(md).toContain('Each workload ran 3 rounds')
      // The median, then the rounds' range when they differ (as fmt writes numbers: whole ones with separators).
      const fmt = (v: number) => (Number.isInteger(v) ? v.toLocaleString('en-US') : String(v))
      const range = creates[0] === creates[2] ? '' : ` (${fmt(creates[0])}–${fmt(creates[2])})`
      expect(md).toContain(`| small | create_files_per_s | ${fmt(creates[1])}${range} |`)
    })
  }, 300_000)

  it('rejects --rounds that is not a whole number from 1 to 20, with exit status 2', async () => {
    for (const bad of ['0', '2.5', 'many', '21']) {
      const r = await runCli(['bench', '--workload', 'small', '--rounds', bad, '--out', out])
      expect(r.code, bad).toBe(2)
      expect(r.stderr).toContain(`--rounds takes a whole number from 1 to 20, not "${bad}"`)
    }
  })

  it('rejects an unknown --compare tool, and a missing rclone, with exit status 2', async () => {
    const r = await runCli(['bench', '--workload', 'small', '--compare', 'rclone,nosuch', '--out', out])
    expect(r.code).toBe(2)
    expect(r.stderr).toMatch(/unknown --compare tool "nosuch" \(known: rclone\)/)
    const missing = await runCli(['bench', '--workload', 'small', '--compare', 'rclone', '--out', out], { env: { PATH: '/nonexistent' } })
    expect(missing.code).toBe(2)
    expect(missing.stderr).toMatch(/rclone .*not installed.*apt-get install rclone/)
  })

  it('rejects --mount-options that do not start with --, with exit status 2', async () => {
    const r = await runCli(['bench', '--workload', 'small', '--mount-options=no-xattrs', '--out', out])
    expect(r.code).toBe(2)
    expect(r.stderr).toMatch(/--mount-options takes s0fs mount options such as --no-xattrs, not "no-xattrs"/)
  })

  it('rejects an unknown workload with exit status 2, naming it and the known ones', async () => {
    const r = await runCli(['bench', '--workload', 'small,nope', '--out', out])
    expect(r.code).toBe(2)
    expect(r.stderr).toMatch(/unknown workload "nope" \(known: micro, seq, small, tar, git, fio, meta, jfsbench\)/)
  })

  it('has --help', async () => {
    const r = await runCli(['bench', '--help'])
    expect(r.code).toBe(0)
    expect(r.stdout).toMatch(/Usage: s0fs bench/)
    expect(r.stdout).toMatch(/jfsbench/)
    expect(r.stdout).toMatch(/--compare TOOLS/)
  })
})
