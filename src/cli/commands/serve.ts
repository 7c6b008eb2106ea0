import { statSync, readFileSync } from 'node:fs'
import path from 'node:path'
import { ApiServer } from '../../serve/server.js'
import { createLogger, type Level } from '../../util/log.js'
import type { Command } from '../command.js'
import { defaultPaths } from '../credentials.js'
import { CliError, EXIT, UsageError } from '../exit-codes.js'
import { parseBytes, parseHostPort } from '../format.js'
import { openRepo } from './repo.js'

/** Reads the bearer token: a private file (like a key file), one line, long enough to resist guessing. */
export function readTokenFile(file: string): string {
  let st
  try {
    st = statSync(file)
  } catch (err) {
    throw new CliError(`cannot read token file ${file}: ${(err as NodeJS.ErrnoException).code === 'ENOENT' ? 'it does not exist' : (err as Error).message}`, EXIT.notFound)
  }
  if (!st.isFile()) throw new CliError(`token file ${file} is not a regular file`, EXIT.usage)
  if ((st.mode & 0o077) !== 0) {
    throw new CliError(`token file ${file} is readable by others (mode ${(st.mode & 0o777).toString(8)}); run: chmod 600 ${file}`, EXIT.wrongKey)
  }
  const token = readFileSync(file, 'utf8').trim()
  if (token.length < 16 || /\s/.test(token)) throw new CliError(`token file ${file} must hold one token of at least 16 characters, no spaces`, EXIT.usage)
  return token
}

export const serveCommand: Command = {
  path: ['serve'],
  summary: 'Serve the repository over HTTP: volumes, snapshots, forks, diff, files, tar, change events.',
  description: [
    'Every request needs "Authorization: Bearer TOKEN" with the token in --token-file (mode 0600).',
    'Paths are confined to their volume. Writes are committed to the bucket before they are answered; a volume',
    'mounted on this node is written through its mount daemon. The API is described in docs/openapi.json',
    '(also served at /v1/openapi.json). Runs until SIGTERM or SIGINT.',
  ].join('\n'),
  options: {
    listen: { type: 'string', value: 'HOST:PORT', description: 'address to listen on (default 127.0.0.1:8080; port 0 picks one)' },
    'token-file': { type: 'string', value: 'FILE', description: 'file holding the bearer token (required)' },
    'max-upload': { type: 'string', value: 'BYTES', description: 'largest file or tar body accepted (default 1G)' },
    'log-format': { type: 'string', value: 'text|json', description: 'request log format (default text)' },
  },
  examples: ['s0fs serve --listen 127.0.0.1:8080 --token-file /etc/s0fs/token', 'curl -H "Authorization: Bearer $(cat token)" http://127.0.0.1:8080/v1/volumes'],
  async run(ctx) {
    const listen = parseHostPort((ctx.values.listen as string | undefined) ?? '127.0.0.1:8080', '--listen')
    if (!ctx.values['token-file']) throw new UsageError('--token-file is required: every route needs a bearer token')
    const token = readTokenFile(ctx.values['token-file'] as string)
    let maxUploadBytes = 1024 ** 3
    if (ctx.values['max-upload']) {
      try {
        maxUploadBytes = parseBytes(ctx.values['max-upload'] as string)
      } catch (err) {
        throw new UsageError((err as Error).message)
      }
    }
    const format = (ctx.values['log-format'] as string | undefined) ?? 'text'
    if (format !== 'text' && format !== 'json') throw new UsageError('--log-format must be text or json')
    const log = createLogger({ format, level: (ctx.values.verbose ? 'debug' : 'info') as Level })
    const repo = await openRepo(ctx)
    const server = new ApiServer({ repo, ...listen, token, portalDir: path.join(defaultPaths().cacheDir, 'portal'), maxUploadBytes, log })
    let bound
    try {
      bound = await server.listen()
    } catch (err) {
      await repo.close()
      throw new CliError(`cannot listen on ${listen.host}:${listen.port}: ${(err as Error).message}`, EXIT.error)
    }
    log.info('listening', { url: `http://${bound.host.includes(':') ? `[${bound.host}]` : bound.host}:${bound.port}`, repo: repo.store.displayUrl })
    await new Promise<void>((resolve) => {
      for (const signal of ['SIGTERM', 'SIGINT'] as const) process.once(signal, () => resolve())
    })
    log.info('stopping')
    await server.close()
    await repo.close()
  },
}
