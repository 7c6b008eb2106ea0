/**
 * The benchmark report: one JSON object per workload with the s0fs and
 * local-disk figures side by side (`small.s0fs.create_files_per_s`,
 * `small.local.create_files_per_s`, …), their speed ratios, the targets and
 * whether each was met; with `--compare rclone`, the same workload's figures
 * on an rclone mount (`small.rclone.create_files_per_s`) and their ratios to
 * local disk; a Markdown table of the same; and an SVG chart of the ratios
 * to local disk.
 */
import type { RequestCounts } from './harness.js'
import type { Figures } from './workloads.js'

export interface WorkloadReport {
  summary: string
  /** s0fs's figures, with the daemon's peak RSS (`daemon_peak_rss_mib`) where a mount was used. */
  s0fs: Figures
  local?: Figures
  /** What the daemon asked of the object store during the workload. */
  requests?: RequestCounts
  /** s0fs speed relative to local disk per figure (> 1: s0fs faster). */
  ratio_to_local?: Record<string, number>
  /** The same workload on an rclone mount (`--compare rclone`), with rclone's peak RSS and upload waits. */
  rclone?: Figures
  /** rclone speed relative to local disk per figure (> 1: rclone faster). */
  rclone_ratio_to_local?: Record<string, number>
  /** Why the workload could not run to its end on rclone (its figures are then absent). */
  rclone_error?: string
  /** With `--rounds N` (N > 1): each round's own figures, s0fs and local disk measured back to back in every round. */
  rounds?: { s0fs: Figures[]; local: Figures[]; rclone?: Figures[] }
}

/** A tool the run compared s0fs with, and how it was set up. */
export interface ComparedTool {
  version: string
  mount: string
  backing: string
  /** What the tool's fsync and timings mean for durability. */
  note: string
}

export interface TargetCheck {
  key: string
  want: string
  measured: number | undefined
  met: boolean | undefined
}

export interface Report {
  date: string
  machine: { cpus: number; memory_gib: number; kernel: string; node: string }
  repository: string
  /**
   * Rounds per workload (`--rounds`, when more than 1): figures are then the
   * median of the rounds, peaks the largest, and ratios the median of each
   * round's own ratio.
   */
  rounds?: number
  /** Options given to every s0fs mount of the run (`--mount-options`), when any. */
  mount_options?: string[]
  page_cache_dropped: boolean
  workloads: Record<string, WorkloadReport>
  targets: TargetCheck[]
  /** The tools of `--compare`, when any. */
  compared?: { rclone?: ComparedTool }
}

/** Bigger is better for rates; smaller is better for times. Other figures get no ratio. */
export function speedRatio(key: string, s0fs: number, local: number): number | undefined {
  if (!(s0fs > 0 && local > 0)) return undefined
  if (/(_per_s|_iops)$/.test(key)) return round3(s0fs / local)
  if (/(seconds|_ms)(_|$)/.test(key)) return round3(local / s0fs)
  return undefined
}

export function ratios(s0fs: Figures, local: Figures): Record<string, number> {
  const out: Record<string, number> = {}
  for (const [key, value] of Object.entries(s0fs)) {
    const other = local[key]
    if (typeof value !== 'number' || typeof other !== 'number') continue
    const r = speedRatio(key, value, other)
    if (r !== undefined) out[key] = r
  }
  return out
}

/** A figure that must hold throughout, so several rounds report their largest. */
const PEAK = /peak/

/**
 * Several rounds' figures as one: each number the median of the rounds (the
 * largest for peaks), a check (`tree_matches`) false if any round's was, and
 * anything else the first round's.
 */
export function combineRounds<T extends Figures>(rounds: T[]): T {
  const out: Figures = {}
  for (const key of Object.keys(rounds[0] ?? {})) {
    const values = rounds.map((r) => r[key]).filter((v) => v !== undefined)
    if (values.every((v) => typeof v === 'number')) {
      const numbers = values as number[]
      out[key] = PEAK.test(key) ? Math.max(...numbers) : median(numbers)
    } else if (values.every((v) => typeof v === 'boolean')) {
      out[key] = values.every(Boolean)
    } else {
      out[key] = values[0]
    }
  }
  return out as T
}

/** Per figure, the median of each round's own speed ratio: each round's pair was measured minutes apart, the rounds may be an hour apart. */
export function roundRatios(s0fs: Figures[], local: Figures[]): Record<string, number> {
  const perRound = s0fs.map((f, i) => ratios(f, local[i] ?? {}))
  const out: Record<string, number> = {}
  for (const key of Object.keys(perRound[0] ?? {})) {
    const values = perRound.map((r) => r[key]).filter((v): v is number => v !== undefined)
    if (values.length) out[key] = round3(median(values))
  }
  return out
}

/** The median; of an even count, the mean of the middle two (rounded as the inputs are, to 3 decimals at most). */
export function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b)
  const mid = sorted.length >> 1
  if (sorted.length % 2) return sorted[mid]
  const mean = (sorted[mid - 1] + sorted[mid]) / 2
  return Number.isInteger(sorted[mid - 1]) && Number.isInteger(sorted[mid]) ? Math.round(mean) : round3(mean)
}

interface Rule {
  key: string
  want: string
  check(report: Report): number | undefined
  ok(value: number): boolean
}

const fig = (workload: string, side: 's0fs' | 'local', key: string) => (r: Report) => {
  const v = r.workloads[workload]?.[side]?.[key]
  return typeof v === 'number' ? v : undefined
}

/** The targets of issue #5, checked against what was measured. */
const RULES: Rule[] = [
  { key: 'small.s0fs.create_files_per_s', want: '>= 3000', check: fig('small', 's0fs', 'create_files_per_s'), ok: (v) => v >= 3000 },
  { key: 'small.s0fs.stat_files_per_s', want: '>= 8000 (cold)', check: fig('small', 's0fs', 'stat_files_per_s'), ok: (v) => v >= 8000 },
  { key: 'small.s0fs.read_files_per_s', want: '>= 3000 (cold)', check: fig('small', 's0fs', 'read_files_per_s'), ok: (v) => v >= 3000 },
  { key: 'small.s0fs.puts_per_1000_files', want: '<= 5', check: fig('small', 's0fs', 'puts_per_1000_files'), ok: (v) => v <= 5 },
  { key: 'tar.s0fs.seconds', want: '<= 2.0', check: fig('tar', 's0fs', 'seconds'), ok: (v) => v <= 2 },
  {
    key: 'git.s0fs.clone_seconds / git.local.clone_seconds',
    want: '<= 2.0',
    check: (r) => {
      const a = fig('git', 's0fs', 'clone_seconds')(r)
      const b = fig('git', 'local', 'clone_seconds')(r)
      return a !== undefined && b ? round3(a / b) : undefined
    },
    ok: (v) => v <= 2,
  },
  { key: 'seq.s0fs.write_mib_per_s', want: '>= 250', check: fig('seq', 's0fs', 'write_mib_per_s'), ok: (v) => v >= 250 },
  { key: 'seq.s0fs.read_cold_bucket_mib_per_s', want: '>= 150', check: fig('seq', 's0fs', 'read_cold_bucket_mib_per_s'), ok: (v) => v >= 150 },
  { key: 'seq.s0fs.read_cold_portal_mib_per_s', want: '>= 400', check: fig('seq', 's0fs', 'read_cold_portal_mib_per_s'), ok: (v) => v >= 400 },
  { key: 'fio.s0fs.randwrite_iops', want: '>= 8000', check: fig('fio', 's0fs', 'randwrite_iops'), ok: (v) => v >= 8000 },
  {
    key: 'fio.s0fs.randwrite_writeback_cache_iops',
    want: '>= 8000 (mount --writeback-cache)',
    check: fig('fio', 's0fs', 'randwrite_writeback_cache_iops'),
    ok: (v) => v >= 8000,
  },
  {
    key: '*.s0fs.daemon_peak_rss_mib (largest)',
    want: '< 150',
    check: (r) => {
      // Only workloads that ran a mount daemon report one (meta and micro run in-process).
      const peaks = Object.values(r.workloads).map((w) => Number(w.s0fs.daemon_peak_rss_mib ?? 0)).filter((p) => p > 0)
      return peaks.length ? Math.max(...peaks) : undefined
    },
    ok: (v) => v < 150,
  },
  {
    key: 'meta.s0fs.snapshot_ms / fork_ms (largest)',
    want: '< 50',
    check: (r) => {
      const m = r.workloads.meta?.s0fs
      if (!m) return undefined
      const v = Object.entries(m).filter(([k, x]) => /^(snapshot|fork)_ms_/.test(k) && typeof x === 'number').map(([, x]) => x as number)
      return v.length ? Math.max(...v) : undefined
    },
    ok: (v) => v < 50,
  },
  {
    // Issue #6: on a mounted volume, including the commit of a small dirty set.
    key: 'meta.s0fs.mounted_snapshot_ms / mounted_fork_ms (largest)',
    want: '< 100',
    check: (r) => {
      const m = r.workloads.meta?.s0fs
      if (!m) return undefined
      const v = Object.entries(m).filter(([k, x]) => /^mounted_(snapshot|fork)_ms_/.test(k) && typeof x === 'number').map(([, x]) => x as number)
      return v.length ? Math.max(...v) : undefined
    },
    ok: (v) => v < 100,
  },
]

export function checkTargets(report: Report): TargetCheck[] {
  return RULES.map((rule) => {
    const measured = rule.check(report)
    return { key: rule.key, want: rule.want, measured, met: measured === undefined ? undefined : rule.ok(measured) }
  })
}

export function markdown(report: Report): string {
  const lines: string[] = []
  lines.push(`# s0fs benchmark — ${report.date}`, '')
  lines.push(
    `Machine: ${report.machine.cpus} CPUs, ${report.machine.memory_gib} GiB, Linux ${report.machine.kernel}, Node ${report.machine.node}. ` +
      `Repository: \`${report.repository}\`. Page cache dropped before cold steps: ${report.page_cache_dropped ? 'yes' : 'no (needs root)'}.` +
      (report.mount_options?.length ? ` Every s0fs mount had \`${report.mount_options.join(' ')}\`.` : '') +
      (report.rounds && report.rounds > 1
        ? ` Each workload ran ${report.rounds} rounds (s0fs, then local disk, in each): figures are medians with the rounds' range in brackets, peaks the largest, ratios the median of each round's own ratio.`
        : ''),
    '',
  )
  const rclone = report.compared?.rclone
  if (rclone) {
    lines.push(
      `Compared with ${rclone.version}: \`${rclone.mount}\`; backing store: ${rclone.backing}. ${rclone.note}`,
      '',
      '| workload | figure | s0fs | rclone | local disk | s0fs speed ÷ local | rclone speed ÷ local | s0fs speed ÷ rclone |',
      '| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |',
    )
  } else {
    lines.push('| workload | figure | s0fs | local disk | s0fs speed ÷ local |', '| --- | --- | ---: | ---: | ---: |')
  }
  const x = (r: number | undefined) => (r === undefined ? '—' : r.toFixed(2) + '×')
  for (const [name, w] of Object.entries(report.workloads)) {
    const cell = (v: unknown, key?: string, side?: Figures[]) => (v === undefined ? '—' : fmt(v) + (key && side ? range(side, key) : ''))
    // s0fs's figures first, in its order, then what only rclone reports (its upload waits, tar's differences).
    const keys = [...Object.keys(w.s0fs), ...Object.keys(w.rclone ?? {}).filter((k) => !(k in w.s0fs))]
    for (const key of keys) {
      const value = w.s0fs[key]
      const local = w.local?.[key]
      if (!rclone) {
        lines.push(`| ${name} | ${key} | ${cell(value, key, w.rounds?.s0fs)} | ${cell(local, key, w.rounds?.local)} | ${x(w.ratio_to_local?.[key])} |`)
        continue
      }
      const other = w.rclone?.[key]
      const vs = typeof value === 'number' && typeof other === 'number' ? speedRatio(key, value, other) : undefined
      lines.push(
        `| ${name} | ${key} | ${cell(value, key, w.rounds?.s0fs)} | ${cell(other, key, w.rounds?.rclone)} | ${cell(local, key, w.rounds?.local)} | ${x(w.ratio_to_local?.[key])} | ${x(w.rclone_ratio_to_local?.[key])} | ${x(vs)} |`,
      )
    }
    const q = w.requests
    if (q) lines.push(`| ${name} | requests (PUT/GET/LIST/DELETE), MiB up/down | ${q.put}/${q.get}/${q.list}/${q.delete}, ${mib(q.bytes_up)}/${mib(q.bytes_down)} |${rclone ? ' — | — | — |' : ''} — | — |`)
    if (rclone && w.rclone_error) lines.push(`| ${name} | rclone failed | | ${w.rclone_error.replace(/\|/g, '\\|').replace(/\s+/g, ' ').slice(0, 300)} | | | | |`)
  }
  lines.push('', '## Targets', '', '| figure | target | measured | met |', '| --- | --- | ---: | :---: |')
  for (const t of report.targets) lines.push(`| ${t.key} | ${t.want} | ${t.measured === undefined ? 'not run' : fmt(t.measured)} | ${t.met === undefined ? '—' : t.met ? 'yes' : '**no**'} |`)
  return lines.join('\n') + '\n'
}

/**
 * A horizontal bar per figure: s0fs speed relative to local disk, on a log
 * scale with 1× marked. With `--compare rclone` each figure gets a second,
 * thinner bar for rclone (colour by tool instead of by side of the line).
 */
export function svgChart(report: Report): string {
  if (report.compared?.rclone) return svgChartCompared(report)
  const bars: { label: string; ratio: number }[] = []
  for (const [name, w] of Object.entries(report.workloads)) {
    for (const [key, ratio] of Object.entries(w.ratio_to_local ?? {})) bars.push({ label: `${name}.${key}`, ratio })
  }
  const rowH = 22
  const top = 40
  const height = top + bars.length * rowH + 40
  const x = ratioAxis(-2) // 0.01× to 10×
  const out = chartFrame({ height, top, x, ticks: [0.01, 0.1, 1, 10], title: `s0fs speed relative to local disk (log scale; right of the line: faster) — ${esc(report.date)}` })
  bars.forEach((b, i) => {
    const y = top + i * rowH
    const x0 = x(1)
    const x1 = x(b.ratio)
    out.push(`<text x="${LABEL_W - 8}" y="${y + 14}" text-anchor="end">${esc(b.label)}</text>`)
    out.push(`<rect x="${Math.min(x0, x1)}" y="${y + 3}" width="${Math.max(1, Math.abs(x1 - x0))}" height="${rowH - 8}" fill="${b.ratio >= 1 ? '#2a9d8f' : '#e76f51'}"/>`)
    out.push(`<text x="${Math.max(x0, x1) + 4}" y="${y + 14}">${b.ratio.toFixed(2)}×</text>`)
  })
  out.push('</svg>')
  return out.join('\n') + '\n'
}

function svgChartCompared(report: Report): string {
  const rows: { label: string; s0fs?: number; rclone?: number }[] = []
  for (const [name, w] of Object.entries(report.workloads)) {
    const keys = [...new Set([...Object.keys(w.ratio_to_local ?? {}), ...Object.keys(w.rclone_ratio_to_local ?? {})])]
    for (const key of keys) rows.push({ label: `${name}.${key}`, s0fs: w.ratio_to_local?.[key], rclone: w.rclone_ratio_to_local?.[key] })
  }
  const series = [
    { key: 's0fs' as const, colour: '#2a9d8f', label: 's0fs' },
    { key: 'rclone' as const, colour: '#8d6cab', label: 'rclone mount (full VFS cache)' },
  ]
  const rowH = 30
  const barH = 10
  const top = 56
  const height = top + rows.length * rowH + 40
  const x = ratioAxis(-3) // 0.001× to 10×
  const legend = series.flatMap((s, i) => {
    const lx = LABEL_W + i * 120
    return [`<rect x="${lx}" y="30" width="12" height="${barH}" fill="${s.colour}"/>`, `<text x="${lx + 16}" y="39">${esc(s.label)}</text>`]
  })
  const out = chartFrame({ height, top, x, ticks: [0.001, 0.01, 0.1, 1, 10], title: `Speed relative to local disk (log scale; right of the line: faster) — ${esc(report.date)}`, legend })
  rows.forEach((row, i) => {
    const y = top + i * rowH
    out.push(`<text x="${LABEL_W - 8}" y="${y + 17}" text-anchor="end">${esc(row.label)}</text>`)
    series.forEach((s, j) => {
      const ratio = row[s.key]
      const by = y + 3 + j * (barH + 2)
      if (ratio === undefined) {
        out.push(`<text x="${x(1) + 4}" y="${by + barH - 1}" font-size="10" fill="#888">${s.key}: —</text>`)
        return
      }
      const x0 = x(1)
      const x1 = x(ratio)
      out.push(`<rect x="${Math.min(x0, x1)}" y="${by}" width="${Math.max(1, Math.abs(x1 - x0))}" height="${barH}" fill="${s.colour}"/>`)
      out.push(`<text x="${Math.max(x0, x1) + 4}" y="${by + barH - 1}" font-size="10">${ratio.toFixed(2)}×</text>`)
    })
  })
  out.push('</svg>')
  return out.join('\n') + '\n'
}

const LABEL_W = 330
const PLOT_W = 460

const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;')

/** x of a ratio on a log scale from 10^minLog to 10× (clamped), right of the labels. */
function ratioAxis(minLog: number, maxLog = 1): (ratio: number) => number {
  return (r) => LABEL_W + ((Math.min(maxLog, Math.max(minLog, Math.log10(r))) - minLog) / (maxLog - minLog)) * PLOT_W
}

/** A chart's opening lines: the svg element, its title, any legend, and the axis's tick lines (1× dark). */
function chartFrame(o: { height: number; top: number; x: (ratio: number) => number; ticks: number[]; title: string; legend?: string[] }): string[] {
  const out = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${LABEL_W + PLOT_W + 80}" height="${o.height}" font-family="sans-serif" font-size="12">`,
    `<text x="10" y="20" font-size="14" font-weight="bold">${o.title}</text>`,
    ...(o.legend ?? []),
  ]
  for (const tick of o.ticks) {
    const tx = o.x(tick)
    out.push(`<line x1="${tx}" y1="${o.top - 6}" x2="${tx}" y2="${o.height - 30}" stroke="${tick === 1 ? '#333' : '#ddd'}" stroke-width="${tick === 1 ? 1.5 : 1}"/>`)
    out.push(`<text x="${tx}" y="${o.height - 14}" text-anchor="middle">${tick}×</text>`)
  }
  return out
}

function fmt(v: unknown): string {
  if (typeof v === 'number') return Number.isInteger(v) ? v.toLocaleString('en-US') : String(v)
  return String(v)
}

/** " (min–max)" of a figure over the rounds, when they differ. */
function range(rounds: Figures[], key: string): string {
  const values = rounds.map((r) => r[key]).filter((v): v is number => typeof v === 'number')
  if (values.length < 2) return ''
  const [lo, hi] = [Math.min(...values), Math.max(...values)]
  return lo === hi ? '' : ` (${fmt(lo)}–${fmt(hi)})`
}

function mib(bytes: number): string {
  return (bytes / 1024 / 1024).toFixed(1)
}

function round3(x: number): number {
  return Math.round(x * 1000) / 1000
}
