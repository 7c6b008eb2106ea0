/**
 * Benchmark entry point (`npm run bench`, `s0fs bench`).
 *   --workload micro   store-pipeline micro-benchmarks (MiB/s)
 *   --workload meta    snapshot/fork latency, commit size, cold open at 10k and 100k files
 *   --json             print results as JSON
 */
import { parseArgs } from 'node:util'
import { runMeta } from './meta.js'
import { runMicro } from './micro.js'

const WORKLOADS = ['micro', 'meta'] as const

export async function runBench(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: { workload: { type: 'string', default: 'micro' }, json: { type: 'boolean', default: false }, help: { type: 'boolean', short: 'h' } },
  })
  if (values.help) {
    process.stdout.write(`Usage: npm run bench -- [--workload ${WORKLOADS.join(',')}] [--json]\n`)
    return 0
  }
  const selected = String(values.workload).split(',')
  for (const name of selected) {
    if (!(WORKLOADS as readonly string[]).includes(name)) {
      process.stderr.write(`unknown workload ${JSON.stringify(name)} (known: ${WORKLOADS.join(', ')})\n`)
      return 2
    }
  }
  const report: Record<string, unknown> = {}
  const log = values.json ? (line: string) => process.stderr.write(line + '\n') : (line: string) => process.stdout.write(line + '\n')
  if (selected.includes('micro')) {
    log('micro: store pipeline (MiB/s, this machine, same run)')
    report.micro = await runMicro(log)
  }
  if (selected.includes('meta')) {
    log('meta: metadata tree at 10k and 100k files (file:// repository)')
    report.meta = await runMeta(log)
  }
  if (values.json) process.stdout.write(JSON.stringify(report, null, 2) + '\n')
  return 0
}

if (import.meta.url === `file://${process.argv[1]}`) {
  process.exitCode = await runBench(process.argv.slice(2))
}
