import { commandHelp } from './command.js'
import { defaultPaths } from './credentials.js'
import { COMMANDS, mainHelp } from './main.js'

/**
 * The CLI reference (docs/cli.md), made from the same text as `--help`, so
 * the two cannot drift apart (a test compares them). Regenerate with
 * `npm run docs`.
 */
export function cliReference(): string {
  const parts = ['# s0fs command reference', '', 'Generated from `s0fs --help` and `s0fs COMMAND --help` (`npm run docs`).', '', '```', mainHelp().trimEnd(), '```', '']
  for (const c of COMMANDS) {
    parts.push(`## s0fs ${c.path.join(' ')}`, '', '```', c.rawArgs ? `s0fs ${c.path.join(' ')}: ${c.summary}\n(run \`s0fs ${c.path.join(' ')} --help\` for its options)` : commandHelp(c).trimEnd(), '```', '')
  }
  return portable(parts.join('\n'))
}

/** Help shows this user's real directories; the reference shows the defaults, whoever generates it. */
function portable(text: string): string {
  const actual = defaultPaths()
  const generic = { runDir: '~/.cache/s0fs/run', repoDir: '~/.local/share/s0fs/repo', keyFile: '~/.local/share/s0fs/key', cacheDir: '~/.cache/s0fs', dataDir: '~/.local/share/s0fs' }
  for (const k of ['runDir', 'repoDir', 'keyFile', 'cacheDir', 'dataDir'] as const) text = text.split(actual[k]).join(generic[k])
  return text
}
