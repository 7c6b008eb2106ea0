import { spawn } from 'node:child_process'
import path from 'node:path'

export const BIN = path.join(import.meta.dirname, '../../bin/s0fs.js')

export interface CliResult {
  code: number
  stdout: string
  stderr: string
}

/** Runs the built `s0fs` command (npm test builds dist/ first) and collects its output. */
export function runCli(args: string[], options: { env?: NodeJS.ProcessEnv; input?: string | Buffer; timeoutMs?: number; cwd?: string } = {}): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, ...args], {
      env: { ...process.env, S0FS_PASSPHRASE: undefined, S0FS_KEY_FILE: undefined, S0FS_REPO: undefined, ...options.env },
      cwd: options.cwd,
      stdio: ['pipe', 'pipe', 'pipe'],
    })
    const out: Buffer[] = []
    const err: Buffer[] = []
    child.stdout.on('data', (d) => out.push(d))
    child.stderr.on('data', (d) => err.push(d))
    const timer = setTimeout(() => {
      child.kill('SIGKILL')
      reject(new Error(`s0fs ${args.join(' ')} timed out`))
    }, options.timeoutMs ?? 60_000)
    child.on('error', reject)
    child.on('close', (code) => {
      clearTimeout(timer)
      resolve({ code: code ?? -1, stdout: Buffer.concat(out).toString(), stderr: Buffer.concat(err).toString() })
    })
    child.stdin.end(options.input)
  })
}
