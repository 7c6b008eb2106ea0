import { existsSync } from 'node:fs'
import { createKeyFile, readKeyFile, type Credential } from '../../crypto/index.js'
import type { Command } from '../command.js'
import { promptSecret } from '../credentials.js'
import { UsageError } from '../exit-codes.js'
import { table } from '../format.js'
import { openRepo } from './repo.js'

export const keyAddCommand: Command = {
  path: ['key', 'add'],
  summary: 'Add a key slot: another passphrase or key file that opens the repository.',
  description: 'The master key is re-wrapped for the new slot; no data is re-encrypted. The current key (--key-file, S0FS_KEY_FILE or S0FS_PASSPHRASE) must open the repository.',
  options: {
    'new-key-file': { type: 'string', value: 'FILE', description: 'key file for the new slot (created, mode 0600, if it does not exist)' },
    'new-passphrase': { type: 'boolean', description: 'new passphrase from env S0FS_NEW_PASSPHRASE, or typed twice on a terminal' },
    label: { type: 'string', value: 'TEXT', description: 'label for the new slot' },
    json: { type: 'boolean', description: 'print the new slot as JSON' },
  },
  async run(ctx) {
    const file = ctx.values['new-key-file'] as string | undefined
    if (!file === !ctx.values['new-passphrase']) throw new UsageError('give exactly one of --new-key-file FILE or --new-passphrase')
    let credential: Credential
    if (file) {
      credential = { kind: 'keyfile', key: existsSync(file) ? await readKeyFile(file) : await createKeyFile(file) }
    } else {
      let passphrase = process.env.S0FS_NEW_PASSPHRASE
      if (!passphrase) {
        if (!ctx.io.isTty) throw new UsageError('set S0FS_NEW_PASSPHRASE or run on a terminal to type the new passphrase')
        passphrase = await promptSecret('New passphrase: ')
        if ((await promptSecret('Repeat new passphrase: ')) !== passphrase) throw new UsageError('passphrases do not match')
      }
      if (!passphrase) throw new UsageError('empty passphrase')
      credential = { kind: 'passphrase', passphrase }
    }
    const repo = await openRepo(ctx)
    try {
      const slot = await repo.addKeySlot(credential, ctx.values.label as string | undefined)
      if (ctx.values.json) ctx.io.out(JSON.stringify({ id: slot.id, kind: slot.kind, label: slot.label, created: slot.created }) + '\n')
      else ctx.io.err(`added ${slot.kind} key slot ${slot.id}\n`)
    } finally {
      await repo.close()
    }
  },
}

export const keyListCommand: Command = {
  path: ['key', 'list'],
  summary: 'List the key slots (never their secrets).',
  options: { json: { type: 'boolean', description: 'print machine-readable JSON' } },
  async run(ctx) {
    const repo = await openRepo(ctx)
    try {
      const slots = repo.listKeySlots().map((s) => ({ id: s.id, kind: s.kind, label: s.label ?? '', created: s.created, kdf: s.kdf.alg }))
      if (ctx.values.json) ctx.io.out(JSON.stringify(slots, null, 2) + '\n')
      else ctx.io.out(table(['id', 'kind', 'kdf', 'created', 'label'], slots.map((s) => [s.id, s.kind, s.kdf, s.created, s.label])))
    } finally {
      await repo.close()
    }
  },
}

export const keyRemoveCommand: Command = {
  path: ['key', 'remove'],
  summary: 'Remove a key slot (the last slot cannot be removed).',
  positionals: [{ name: 'SLOT', description: 'slot id, as shown by `s0fs key list`' }],
  async run(ctx) {
    const repo = await openRepo(ctx)
    try {
      await repo.removeKeySlot(ctx.positionals[0])
      ctx.io.err(`removed key slot ${ctx.positionals[0]}\n`)
    } finally {
      await repo.close()
    }
  },
}
