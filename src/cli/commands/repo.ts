import { FORMAT_VERSION } from '../../crypto/index.js'
import { Repository } from '../../repo/index.js'
import type { Command, CommandContext } from '../command.js'
import { UsageError } from '../exit-codes.js'
import { repoUrl, resolveCredential } from '../credentials.js'
import { formatBytes, table } from '../format.js'

/** Opens the repository named by --repo / S0FS_REPO (or the embedded default) with the resolved key. */
export async function openRepo(ctx: CommandContext): Promise<Repository> {
  const { url, isDefault } = repoUrl(ctx.values)
  const credential = await resolveCredential(ctx.values, ctx.io, { isDefaultRepo: isDefault })
  return Repository.open(url, credential)
}

const jsonOption = { json: { type: 'boolean' as const, description: 'print machine-readable JSON' } }

export const initCommand: Command = {
  path: ['init'],
  summary: 'Create a repository (where volumes, snapshots and their data live).',
  description:
    'Probes whether the storage honours conditional writes and records the answer. With --key-file, a key file that does not exist yet is created (mode 0600).',
  options: {
    label: { type: 'string', value: 'TEXT', description: 'label for the first key slot' },
    format: { type: 'string', value: 'N', description: `repository format: ${FORMAT_VERSION} (default), or 1 for nodes running s0fs from before framed blobs` },
    ...jsonOption,
  },
  examples: [
    's0fs init --repo file:///srv/s0fs --key-file ~/.s0fs.key',
    'S0FS_PASSPHRASE=… s0fs init --repo "s3://bucket/s0fs?endpoint=http://127.0.0.1:9000"',
  ],
  async run(ctx) {
    const formatVersion = ctx.values.format === undefined ? undefined : Number(ctx.values.format)
    if (formatVersion !== undefined && !(Number.isInteger(formatVersion) && formatVersion >= 1 && formatVersion <= FORMAT_VERSION)) {
      throw new UsageError(`--format must be a repository format from 1 to ${FORMAT_VERSION}`)
    }
    const { url, isDefault } = repoUrl(ctx.values)
    const credential = await resolveCredential(ctx.values, ctx.io, { create: true, isDefaultRepo: isDefault, confirm: true })
    const repo = await Repository.init(url, credential, { label: ctx.values.label as string | undefined, formatVersion })
    try {
      const info = { id: repo.id, url: repo.store.displayUrl, conditionalWrites: repo.config.storage.conditionalWrites }
      if (ctx.values.json) ctx.io.out(JSON.stringify(info) + '\n')
      else {
        ctx.io.err(`created repository ${repo.id} at ${repo.store.displayUrl}\n`)
        if (!info.conditionalWrites) {
          ctx.io.err('note: this storage ignores conditional writes; s0fs relies on its volume lease to keep one writer per volume (see `s0fs repo info`)\n')
        }
      }
    } finally {
      await repo.close()
    }
  },
}

export const repoInfoCommand: Command = {
  path: ['repo', 'info'],
  summary: 'Show the repository format, backend, conditional-write support, object count and size.',
  options: jsonOption,
  async run(ctx) {
    const repo = await openRepo(ctx)
    try {
      const info = await repo.info()
      if (ctx.values.json) {
        ctx.io.out(JSON.stringify(info, null, 2) + '\n')
        return
      }
      ctx.io.out(
        [
          `repository     ${info.id}`,
          `location       ${info.url}`,
          `format         ${info.format} v${info.version}, created ${info.created}`,
          `conditional    ${info.conditionalWrites ? 'yes' : 'no'} — ${info.writerGuarantee}`,
          `chunking       content-defined, ${formatBytes(info.chunking.min)} / ${formatBytes(info.chunking.avg)} / ${formatBytes(info.chunking.max)} (min/avg/max)`,
          `compression    ${info.compression}; encryption AES-256-GCM`,
          `key slots      ${info.keySlots}`,
          `objects        ${info.objects} (${formatBytes(info.bytes)})`,
          '',
        ].join('\n'),
      )
      const rows = Object.entries(info.byPrefix).map(([p, v]) => [p, v.objects, formatBytes(v.bytes)])
      if (rows.length) ctx.io.out(table(['prefix', 'objects', 'size'], rows))
    } finally {
      await repo.close()
    }
  },
}
