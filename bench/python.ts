import { spawn } from 'node:child_process'

/**
 * Runs a Python fixture (`test/fixtures/*.py`) and parses the JSON it prints
 * on stdout. A fixture that crashes or prints something else rejects, naming
 * `what` with its exit status and stderr.
 */
export function runPythonJson<T>(script: string, args: string[], what: string): Promise<T> {
  return new Promise((resolve, reject) => {
    const child = spawn('python3', [script, ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
    let out = ''
    let err = ''
    child.stdout.on('data', (d) => (out += d))
    child.stderr.on('data', (d) => (err += d))
    child.on('close', (code) => {
      try {
        resolve(JSON.parse(out) as T)
      } catch {
        reject(new Error(`${what} exited ${code}: ${err}`))
      }
    })
  })
}
