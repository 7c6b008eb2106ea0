// Builds the optional native addon at `npm install`. Never fails the install:
// without a compiler s0fs uses its pure-JavaScript fallback (slower chunking).
import { spawnSync } from 'node:child_process'
import { existsSync } from 'node:fs'
import path from 'node:path'

const here = path.dirname(new URL(import.meta.url).pathname)
const candidates = [
  process.env.npm_config_node_gyp,
  path.join(path.dirname(process.execPath), '../lib/node_modules/npm/node_modules/node-gyp/bin/node-gyp.js'),
  '/usr/lib/node_modules/npm/node_modules/node-gyp/bin/node-gyp.js',
].filter((p) => p && existsSync(p))

if (process.env.S0FS_NATIVE === '0') {
  console.error('s0fs: S0FS_NATIVE=0, not building the native addon')
  process.exit(0)
}
// Build against the headers of the Node.js that runs us when they are installed
// (no download: this machine may have no internet access).
const args = ['rebuild', '--jobs=max']
const prefix = path.resolve(path.dirname(process.execPath), '..')
if (!process.env.npm_config_nodedir && existsSync(path.join(prefix, 'include/node/node_api.h'))) args.push(`--nodedir=${prefix}`)
const gyp = candidates[0]
const result = gyp
  ? spawnSync(process.execPath, [gyp, ...args], { cwd: here, stdio: ['ignore', 'ignore', 'pipe'], encoding: 'utf8' })
  : spawnSync('node-gyp', args, { cwd: here, stdio: ['ignore', 'ignore', 'pipe'], encoding: 'utf8' })
if (result.status === 0) {
  console.error('s0fs: built native addon (native/build/Release/s0fs_native.node)')
} else {
  const why = result.error ? result.error.message : (result.stderr || '').trim().split('\n').slice(-3).join(' | ')
  console.error(`s0fs: native addon not built (${why || 'no node-gyp'}); using the JavaScript fallback`)
}
