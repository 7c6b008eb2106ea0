import { commandHelp, parseCommandArgs, type Command, type Io } from './command.js'
import { benchCommand } from './commands/bench.js'
import { keyAddCommand, keyListCommand, keyRemoveCommand } from './commands/key.js'
import { mountCommand, umountCommand } from './commands/mount.js'
import { FILE_COMMANDS } from './commands/files.js'
import { fsckCommand } from './commands/fsck.js'
import { gcCommand } from './commands/gc.js'
import { serveCommand } from './commands/serve.js'
import { statsCommand } from './commands/stats.js'
import { initCommand, repoInfoCommand } from './commands/repo.js'
import { VOLUME_COMMANDS } from './commands/volume.js'
import { errorMessage, EXIT, EXIT_HELP, exitCodeFor, UsageError } from './exit-codes.js'

export const COMMANDS: Command[] = [
  mountCommand,
  umountCommand,
  statsCommand,
  ...VOLUME_COMMANDS,
  ...FILE_COMMANDS,
  serveCommand,
  gcCommand,
  fsckCommand,
  initCommand,
  repoInfoCommand,
  keyAddCommand,
  keyListCommand,
  keyRemoveCommand,
  benchCommand,
]

export function mainHelp(): string {
  const width = Math.max(...COMMANDS.map((c) => c.path.join(' ').length)) + 2
  return [
    'Usage: s0fs COMMAND [options]',
    '',
    'Persistent POSIX volumes on object storage: encrypted, deduplicated, with O(1) snapshots and forks.',
    '',
    'Commands:',
    ...COMMANDS.map((c) => `  ${c.path.join(' ').padEnd(width)}${c.summary}`),
    '',
    'Run `s0fs COMMAND --help` for a command\'s options.',
    '',
    'Environment:',
    '  S0FS_REPO         repository URL (instead of --repo)',
    '  S0FS_KEY_FILE     key file (instead of --key-file)',
    '  S0FS_PASSPHRASE   passphrase (instead of a key file)',
    '  S0FS_NEW_PASSPHRASE   the new passphrase for `s0fs key add --new-passphrase`',
    '  AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_PROFILE, AWS_REGION   S3 credentials (standard AWS chain)',
    '',
    EXIT_HELP,
    '',
  ].join('\n')
}

/** Finds the command whose words match the longest prefix of argv. */
function findCommand(argv: string[]): { command?: Command; rest: string[]; group?: string } {
  let best: Command | undefined
  for (const c of COMMANDS) {
    if (c.path.every((w, i) => argv[i] === w) && (!best || c.path.length > best.path.length)) best = c
  }
  if (best) return { command: best, rest: argv.slice(best.path.length) }
  const group = COMMANDS.some((c) => c.path.length > 1 && c.path[0] === argv[0]) ? argv[0] : undefined
  return { rest: argv, group }
}

export async function main(argv: string[], io: Io): Promise<number> {
  if (argv.length === 0 || argv[0] === '--help' || argv[0] === '-h' || argv[0] === 'help') {
    io.out(mainHelp())
    return argv.length === 0 ? EXIT.usage : EXIT.ok
  }
  if (argv[0] === '--version' || argv[0] === 'version') {
    const { version } = await import('./version.js')
    io.out(`s0fs ${version}\n`)
    return EXIT.ok
  }
  const { command, rest, group } = findCommand(argv)
  if (!command) {
    if (group) {
      const subs = COMMANDS.filter((c) => c.path[0] === group).map((c) => c.path.slice(1).join(' '))
      io.err(`s0fs ${group}: ${argv[1] ? `unknown subcommand ${JSON.stringify(argv[1])}` : 'missing subcommand'} (one of: ${subs.join(', ')})\n`)
    } else {
      io.err(`s0fs: unknown command ${JSON.stringify(argv[0])}; run \`s0fs --help\` for the list\n`)
    }
    return EXIT.usage
  }
  try {
    if (command.rawArgs) return (await command.run({ command: command.path.join(' '), values: {}, positionals: rest, io })) ?? EXIT.ok
    const { values, positionals } = parseCommandArgs(command, rest)
    if (values.help) {
      io.out(commandHelp(command))
      return EXIT.ok
    }
    return (await command.run({ command: command.path.join(' '), values, positionals, io })) ?? EXIT.ok
  } catch (err) {
    const code = exitCodeFor(err)
    const name = ['s0fs', ...command.path].join(' ')
    if (err instanceof UsageError) io.err(`${name}: ${err.message}\nRun \`${name} --help\` for usage.\n`)
    else io.err(`${name}: ${errorMessage(err)}\n`)
    if (process.env.S0FS_DEBUG && err instanceof Error && err.stack) io.err(err.stack + '\n')
    return code
  }
}
