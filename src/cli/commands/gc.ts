import { collectGarbage, type GcReport } from '../../repo/index.js'
import type { Command } from '../command.js'
import { CliError, EXIT, UsageError } from '../exit-codes.js'
import { formatBytes } from '../format.js'
import { ThrottledStatus } from '../progress.js'
import { openRepo } from './repo.js'

/** "90s", "30m", "1h", "2d", or plain seconds. */
export function parseDuration(text: string, what: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?$/.exec(text.trim())
  if (!m) throw new UsageError(`${what} must be a duration such as 90s, 30m, 1h or 2d, got ${JSON.stringify(text)}`)
  const unit = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }[(m[2] ?? 's') as 'ms' | 's' | 'm' | 'h' | 'd']
  return Math.round(Number(m[1]) * unit)
}

export const gcCommand: Command = {
  path: ['gc'],
  summary: 'Delete data no volume, snapshot or live writer needs (after a grace period).',
  description: [
    'Marks everything reachable from every volume head and snapshot, and deletes unreferenced segments and metadata',
    'packs older than --grace, and repacks segments that are mostly dead (their live blobs move to new segments).',
    'Before deleting, it publishes what it intends to delete and waits until every live writer (mounts included,',
    'anywhere) has acknowledged: from then on they do not deduplicate against it, and they have committed what they',
    'wrote before. Forks keep all the data they share.',
    'Exit status: 0 done, 7 a live writer did not acknowledge within --wait (nothing deleted).',
  ].join('\n'),
  options: {
    'dry-run': { type: 'boolean', description: 'report what would be deleted; change nothing' },
    grace: { type: 'string', value: 'DURATION', description: 'keep unreferenced objects younger than this (default 1h; e.g. 0, 10m, 2d)' },
    wait: { type: 'string', value: 'DURATION', description: 'how long to wait for live writers to acknowledge (default 2m)' },
    'repack-below': { type: 'string', value: 'FRACTION', description: 'repack segments less than this fraction live (default 0.5; 0: never)' },
    json: { type: 'boolean', description: 'print the report as JSON' },
  },
  examples: ['s0fs gc --dry-run', 's0fs gc --grace 10m'],
  async run(ctx) {
    const graceMs = ctx.values.grace === undefined ? undefined : parseDuration(ctx.values.grace as string, '--grace')
    const waitMs = ctx.values.wait === undefined ? undefined : parseDuration(ctx.values.wait as string, '--wait')
    const repackText = ctx.values['repack-below'] as string | undefined
    const repackBelow = repackText === undefined ? undefined : Number(repackText)
    if (repackBelow !== undefined && !(repackBelow >= 0 && repackBelow <= 1)) throw new UsageError(`--repack-below must be a fraction from 0 to 1, got ${JSON.stringify(repackText)}`)
    const repo = await openRepo(ctx)
    const status = new ThrottledStatus(process.stderr)
    let report: GcReport
    try {
      report = await collectGarbage(repo, {
        dryRun: ctx.values['dry-run'] === true,
        graceMs,
        waitMs,
        repackBelow,
        onProgress: (p) =>
          status.update(() => `gc: ${p.phase} ${p.done}${p.total !== undefined ? ` of ${p.total}` : ''}${p.phase === 'wait' ? ` writers acknowledged (waiting for ${p.detail})` : ''}`),
      })
    } finally {
      status.done()
      await repo.close()
    }
    if (ctx.values.json) ctx.io.out(JSON.stringify(report, null, 2) + '\n')
    else ctx.io.out(describe(report))
    if (report.aborted) throw new CliError(report.aborted, EXIT.busy)
  },
}

function describe(r: GcReport): string {
  const verb = r.dryRun ? 'would delete' : 'deleted'
  const part = (name: string, x: GcReport['segments']) =>
    `${name}: ${x.total} total, ${x.live} live, ${verb} ${x.deleted} (${formatBytes(x.bytesDeleted)})${x.youngKept ? `; ${x.youngKept} unreferenced but younger than the grace period, kept` : ''}`
  const lines = [
    `marked from ${r.volumes} volumes and ${r.snapshots} snapshots`,
    part('segments', r.segments),
    part('metadata packs', r.packs),
  ]
  if (r.repacked.segments > 0) lines.push(`repacked: ${r.dryRun ? 'would copy' : 'copied'} ${r.repacked.blobs || ''}${r.repacked.blobs ? ' live blobs, ' : ''}${formatBytes(r.repacked.bytesCopied)} out of ${r.repacked.segments} sparse segments, freeing ${formatBytes(r.repacked.bytesFreed)}`)
  if (!r.dryRun && r.indexObjects.before !== r.indexObjects.after) lines.push(`blob index: ${r.indexObjects.before} objects rewritten into ${r.indexObjects.after}`)
  if (r.deadBytesInLiveSegments > 0) lines.push(`${formatBytes(r.deadBytesInLiveSegments)} of unreferenced blobs stay in segments above the repack threshold`)
  for (const w of r.writers) lines.push(`writer ${w.volume} (${w.holder}): ${w.acknowledged ? 'acknowledged' : 'did not acknowledge'}`)
  lines.push(`${r.dryRun ? 'would free' : 'freed'} ${r.objectsFreed} objects, ${formatBytes(r.bytesFreed)}`)
  return lines.join('\n') + '\n'
}
