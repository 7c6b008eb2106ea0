import path from 'node:path'
import { fsck, type FsckReport } from '../../repo/index.js'
import type { Command } from '../command.js'
import { defaultPaths } from '../credentials.js'
import { EXIT } from '../exit-codes.js'
import { formatBytes } from '../format.js'
import { ThrottledStatus } from '../progress.js'
import { openRepo } from './repo.js'

export const fsckCommand: Command = {
  path: ['fsck'],
  summary: 'Check that every page and blob of every volume and snapshot exists and decrypts; name what is damaged.',
  description: [
    'Without --read-data, checks all metadata pages (read and decrypted) and that every blob lies inside an existing segment.',
    'With --read-data, also reads and verifies every blob (all data). Damage is listed with the volumes, snapshots and file ranges it affects.',
    '--repair makes damaged files of volumes readable: their damaged ranges are zeroed and listed in the user.s0fs.damaged',
    'extended attribute (snapshots are immutable and only reported). Refused while a volume to repair is mounted for writing.',
    'Exit status: 0 nothing damaged (or all of it repaired), 8 damage found.',
  ].join('\n'),
  options: {
    'read-data': { type: 'boolean', description: 'read and verify all data, not only metadata and segment presence' },
    repair: { type: 'boolean', description: 'zero damaged ranges of volume files so they read again (reported, and recorded in an xattr)' },
    json: { type: 'boolean', description: 'print the report as JSON' },
  },
  examples: ['s0fs fsck', 's0fs fsck --read-data --repair'],
  async run(ctx) {
    const repo = await openRepo(ctx)
    const status = new ThrottledStatus(process.stderr)
    let report: FsckReport
    try {
      report = await fsck(repo, {
        readData: ctx.values['read-data'] === true,
        repair: ctx.values.repair === true,
        portalDir: path.join(defaultPaths().cacheDir, 'portal'),
        onProgress: (p) => status.update(() => `fsck: ${p.phase} ${p.done}${p.total ? ` of ${p.total}` : ''}${p.phase === 'metadata' ? ' pages' : p.phase === 'data' ? ' blobs' : ' ranges'}`),
      })
    } finally {
      status.done()
      await repo.close()
    }
    if (ctx.values.json) ctx.io.out(JSON.stringify(report, null, 2) + '\n')
    else ctx.io.out(describe(report, ctx.values['read-data'] === true))
    return report.ok ? EXIT.ok : EXIT.damaged
  },
}

function describe(r: FsckReport, readData: boolean): string {
  const lines = [
    `checked ${r.volumes} volumes and ${r.snapshots} snapshots: ${r.pages} metadata pages, ${r.inodes} inodes, ${r.extents} extents, ${r.blobs} blobs in ${r.segments} segments` +
      (readData ? `; ${formatBytes(r.bytesVerified)} of data verified` : ' (data not read: use --read-data)'),
  ]
  for (const p of r.problems) {
    lines.push(`DAMAGED: ${p.detail}`)
    lines.push(`  in: ${p.refs.join(', ')}`)
    for (const x of p.ranges) lines.push(`  ${x.ref}:${x.path} bytes ${x.start}-${x.end}`)
    for (const x of p.paths) if (p.kind === 'page') lines.push(`  ${x}`)
  }
  for (const x of r.repaired) lines.push(`repaired: ${x.ref}:${x.path} bytes ${x.start}-${x.end} now read as zeros (listed in its user.s0fs.damaged xattr)`)
  lines.push(r.problems.length === 0 ? 'no damage found' : r.ok ? 'all damage repaired (the lost bytes are zeros)' : `${r.problems.length} problems found`)
  return lines.join('\n') + '\n'
}
