import { parseArgs } from 'node:util'
import { EXIT_HELP, UsageError } from './exit-codes.js'

export interface OptionSpec {
  type: 'string' | 'boolean'
  short?: string
  description: string
  /** Placeholder shown in help, e.g. URL or BYTES. */
  value?: string
  multiple?: boolean
}

export interface PositionalSpec {
  name: string
  description: string
  optional?: boolean
  /** Takes every remaining argument: one or more, or with `optional` none or more. */
  variadic?: boolean
}

export interface Io {
  out: (text: string) => void
  err: (text: string) => void
  isTty: boolean
}

export interface CommandContext {
  /** The command's words, e.g. "snapshot create". */
  command: string
  values: Record<string, string | boolean | string[] | undefined>
  positionals: string[]
  io: Io
}

export interface Command {
  /** Words that select the command, e.g. ['key', 'add']. */
  path: string[]
  summary: string
  description?: string
  options?: Record<string, OptionSpec>
  positionals?: PositionalSpec[]
  examples?: string[]
  /** The command parses its own arguments (and --help): it gets them all as positionals. */
  rawArgs?: boolean
  run(ctx: CommandContext): Promise<number | void>
}

/** Options every command accepts. */
export const GLOBAL_OPTIONS: Record<string, OptionSpec> = {
  repo: { type: 'string', value: 'URL', description: 'repository: file:///DIR, s3://BUCKET[/PREFIX][?endpoint=URL] (env S0FS_REPO)' },
  'key-file': { type: 'string', value: 'FILE', description: 'key file (env S0FS_KEY_FILE); or set S0FS_PASSPHRASE, or type it on a terminal' },
  verbose: { type: 'boolean', short: 'v', description: 'say more about what happens (never prints secrets)' },
  help: { type: 'boolean', short: 'h', description: 'show this help' },
}

export function parseCommandArgs(command: Command, argv: string[]): { values: CommandContext['values']; positionals: string[] } {
  const options = { ...GLOBAL_OPTIONS, ...(command.options ?? {}) }
  let parsed: ReturnType<typeof parseArgs>
  try {
    parsed = parseArgs({
      args: argv,
      options: Object.fromEntries(
        Object.entries(options).map(([name, o]) => [name, { type: o.type, multiple: o.multiple ?? false, ...(o.short ? { short: o.short } : {}) }]),
      ),
      allowPositionals: true,
      strict: true,
    })
  } catch (err) {
    if (!String((err as NodeJS.ErrnoException).code).startsWith('ERR_PARSE_ARGS')) throw err
    throw new UsageError(cleanParseError((err as Error).message))
  }
  const values = parsed.values as CommandContext['values']
  if (values.help) return { values, positionals: parsed.positionals }
  const specs = command.positionals ?? []
  // A variadic positional takes one or more, unless it is also optional.
  const required = specs.filter((p) => !p.optional).length
  const variadic = specs.some((p) => p.variadic)
  if (parsed.positionals.length < required) {
    const missing = specs.filter((p) => !p.optional)[parsed.positionals.length]
    throw new UsageError(`missing ${missing?.name ?? 'argument'}`)
  }
  if (!variadic && parsed.positionals.length > specs.length) {
    throw new UsageError(`unexpected argument ${JSON.stringify(parsed.positionals[specs.length])}`)
  }
  return { values, positionals: parsed.positionals }
}

function cleanParseError(message: string): string {
  // parseArgs says "Unknown option '--x'. To specify a positional argument starting with a '-', place it at the end of the command after '--', as in '-- \"--x\"" — keep the first sentence.
  return message.split('. ')[0].replace(/^TypeError \[[A-Z_]+\]: /, '')
}

export function commandHelp(command: Command): string {
  const name = ['s0fs', ...command.path].join(' ')
  const positionals = (command.positionals ?? []).map((p) => `${p.optional ? '[' : ''}${p.name}${p.variadic ? '…' : ''}${p.optional ? ']' : ''}`).join(' ')
  const lines = [`Usage: ${name} [options]${positionals ? ' ' + positionals : ''}`, '', command.summary]
  if (command.description) lines.push('', command.description)
  if (command.positionals?.length) {
    lines.push('', 'Arguments:')
    for (const p of command.positionals) lines.push(formatRow(p.name, p.description))
  }
  const own = Object.entries(command.options ?? {})
  if (own.length) {
    lines.push('', 'Options:')
    for (const [n, o] of own) lines.push(formatOption(n, o))
  }
  lines.push('', 'Global options:')
  for (const [n, o] of Object.entries(GLOBAL_OPTIONS)) lines.push(formatOption(n, o))
  if (command.examples?.length) {
    lines.push('', 'Examples:')
    for (const e of command.examples) lines.push(`  ${e}`)
  }
  lines.push('', EXIT_HELP)
  return lines.join('\n') + '\n'
}

function formatOption(name: string, o: OptionSpec): string {
  const flag = `${o.short ? `-${o.short}, ` : '    '}--${name}${o.type === 'string' ? ` ${o.value ?? 'VALUE'}` : ''}`
  return formatRow(flag, o.description)
}

function formatRow(left: string, right: string): string {
  return left.length >= 26 ? `  ${left}\n  ${' '.repeat(26)}${right}` : `  ${left.padEnd(26)}${right}`
}
