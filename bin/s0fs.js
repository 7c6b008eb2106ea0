#!/usr/bin/env node
// Entry point of the `s0fs` command: runs the compiled CLI from dist/.
// The mount daemon reads /dev/fuse on libuv's thread pool, so the pool must be
// larger than its default 4; libuv reads this once, before its first use.
process.env.UV_THREADPOOL_SIZE ??= '16'
const { main } = await import('../dist/src/cli/main.js')
const { watchStdout } = await import('../dist/src/cli/stdout.js')
watchStdout() // `s0fs … | head` ends quietly

const code = await main(process.argv.slice(2), {
  out: (text) => process.stdout.write(text),
  err: (text) => process.stderr.write(text),
  isTty: Boolean(process.stderr.isTTY),
})
process.exitCode = code
