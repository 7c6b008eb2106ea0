import type { Command } from '../command.js'

/**
 * `s0fs bench`: the benchmark harness lives in bench/ (built to dist/bench);
 * it is loaded only when asked for, and parses its own arguments.
 */
export const benchCommand: Command = {
  path: ['bench'],
  summary: 'Benchmark s0fs against local disk, and with --compare rclone against an rclone mount (seq, small, tar, git, fio, meta, jfsbench, micro).',
  rawArgs: true,
  async run(ctx) {
    const { runBench } = (await import(new URL('../../../bench/run.js', import.meta.url).href)) as typeof import('../../../bench/run.js')
    return runBench(ctx.positionals)
  },
}
