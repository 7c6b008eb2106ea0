import { existsSync } from 'node:fs'
import { homedir } from 'node:os'
import path from 'node:path'
import { createInterface } from 'node:readline'
import { Writable } from 'node:stream'
import { createKeyFile, readKeyFile, type Credential } from '../crypto/index.js'
import type { CommandContext, Io } from './command.js'
import { CliError, EXIT, UsageError } from './exit-codes.js'

/** Where the embedded default repository and its key live (XDG base directories). */
export function defaultPaths(): { dataDir: string; repoDir: string; keyFile: string; cacheDir: string; runDir: string } {
  const home = homedir()
  const dataDir = path.join(process.env.XDG_DATA_HOME || path.join(home, '.local', 'share'), 's0fs')
  const cacheDir = path.join(process.env.XDG_CACHE_HOME || path.join(home, '.cache'), 's0fs')
  const runDir = process.env.XDG_RUNTIME_DIR ? path.join(process.env.XDG_RUNTIME_DIR, 's0fs') : path.join(cacheDir, 'run')
  return { dataDir, repoDir: path.join(dataDir, 'repo'), keyFile: path.join(dataDir, 'key'), cacheDir, runDir }
}

/** The repository URL from --repo or S0FS_REPO, else the embedded default. */
export function repoUrl(values: CommandContext['values']): { url: string; isDefault: boolean } {
  const given = (values.repo as string | undefined) ?? process.env.S0FS_REPO
  if (given) return { url: given, isDefault: false }
  return { url: `file://${defaultPaths().repoDir}`, isDefault: true }
}

/**
 * The key, in order: --key-file, S0FS_KEY_FILE, S0FS_PASSPHRASE, the default
 * key file (embedded repository only), a passphrase typed on the terminal.
 * With `create`, a named key file that does not exist yet is created (0600).
 */
export async function resolveCredential(
  values: CommandContext['values'],
  io: Io,
  opts: { create?: boolean; isDefaultRepo?: boolean; confirm?: boolean } = {},
): Promise<Credential> {
  const file = (values['key-file'] as string | undefined) ?? process.env.S0FS_KEY_FILE
  if (file) {
    if (opts.create && !existsSync(file)) {
      const key = await createKeyFile(file)
      io.err(`created key file ${file} (mode 0600): keep it safe, it is the only way into this repository besides other key slots\n`)
      return { kind: 'keyfile', key }
    }
    return { kind: 'keyfile', key: await readKeyFile(file) }
  }
  if (process.env.S0FS_PASSPHRASE !== undefined) {
    if (!process.env.S0FS_PASSPHRASE) throw new UsageError('S0FS_PASSPHRASE is set but empty')
    return { kind: 'passphrase', passphrase: process.env.S0FS_PASSPHRASE }
  }
  if (opts.isDefaultRepo) {
    const { keyFile, repoDir } = defaultPaths()
    if (opts.create && !existsSync(keyFile)) return { kind: 'keyfile', key: await createKeyFile(keyFile) }
    if (existsSync(keyFile)) return { kind: 'keyfile', key: await readKeyFile(keyFile) }
    // Not a missing key but a missing repository: say so, and how it comes to be.
    if (!existsSync(repoDir)) throw new CliError(`no embedded repository yet at ${repoDir}: \`s0fs mount DIR\` creates it (or give --repo)`, EXIT.notFound)
  }
  if (io.isTty && process.stdin.isTTY) {
    const passphrase = await promptSecret('Passphrase: ')
    if (!passphrase) throw new UsageError('empty passphrase')
    if (opts.confirm && (await promptSecret('Repeat passphrase: ')) !== passphrase) throw new UsageError('passphrases do not match')
    return { kind: 'passphrase', passphrase }
  }
  throw new UsageError('no key given: use --key-file FILE, or set S0FS_KEY_FILE or S0FS_PASSPHRASE')
}

/** Reads a line from the terminal without echoing it. */
export function promptSecret(question: string): Promise<string> {
  return new Promise((resolve, reject) => {
    let muted = false
    const output = new Writable({
      write(chunk, _encoding, callback) {
        if (!muted) process.stderr.write(chunk)
        callback()
      },
    })
    const rl = createInterface({ input: process.stdin, output, terminal: true })
    rl.question(question, (answer) => {
      rl.close()
      process.stderr.write('\n')
      resolve(answer)
    })
    muted = true
    rl.on('SIGINT', () => {
      rl.close()
      reject(new UsageError('interrupted'))
    })
  })
}
