#!/usr/bin/env node
// Entry point of the `s0fs` command: runs the compiled CLI from dist/.
import { main } from '../dist/src/cli/main.js'

const code = await main(process.argv.slice(2), {
  out: (text) => process.stdout.write(text),
  err: (text) => process.stderr.write(text),
  isTty: Boolean(process.stderr.isTTY),
})
process.exitCode = code
