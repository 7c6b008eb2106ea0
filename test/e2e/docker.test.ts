import { spawn } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { canonicalMountpoint, mountState } from '../../src/mount/registry.js'
import { BIN, runCli } from '../helpers/cli.js'
import { forceUnmount, mustSh, sh } from '../helpers/mount.js'
import { s3Credentials, s3Servers, s3Url } from '../helpers/stores.js'

/**
 * docker/: what can be checked without a Docker engine (none runs here).
 * The image's entrypoint script runs under bash against the local S3
 * server — init (twice: idempotent), then mount in the foreground, write,
 * SIGTERM — and the compose file and the Kubernetes pod parse and wire the
 * mount the way their comments say.
 */

const ROOT = path.join(import.meta.dirname, '../..')
const ENTRYPOINT = path.join(ROOT, 'docker/entrypoint.sh')
const home = mkdtempSync(path.join(tmpdir(), 's0fs-docker-'))
const s3rver = s3Servers().find((s) => s.name === 's3rver')

afterAll(() => {
  forceUnmount(path.join(home, 'shared/work'))
  rmSync(home, { recursive: true, force: true })
})

async function parseYaml(file: string): Promise<Record<string, any>> {
  const out = await mustSh(`python3 -c "import json, sys, yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1]))))" ${file}`)
  return JSON.parse(out)
}

describe('docker/', () => {
  it.runIf(s3rver)('the entrypoint initialises once, mounts in the foreground and unmounts on SIGTERM', async () => {
    const creds = s3Credentials(s3rver!)
    const env = {
      ...process.env,
      HOME: home,
      XDG_RUNTIME_DIR: '',
      S0FS_BIN: `${process.execPath} ${BIN}`,
      S0FS_REPO: s3Url(s3rver!),
      S0FS_KEY_FILE: path.join(home, 'keys/s0fs.key'),
      S0FS_VOLUME: 'agent-42',
      S0FS_MOUNTPOINT: path.join(home, 'shared/work'),
      AWS_ACCESS_KEY_ID: creds.accessKeyId,
      AWS_SECRET_ACCESS_KEY: creds.secretAccessKey,
    }
    const first = await sh(`bash ${ENTRYPOINT} init`, { env })
    expect(first.code, first.stderr).toBe(0)
    expect(first.stderr).toMatch(/created repository/)
    expect(first.stderr).toMatch(/created volume agent-42/)
    const second = await sh(`bash ${ENTRYPOINT} init`, { env })
    expect(second.code, second.stderr).toBe(0)
    expect(second.stderr).toMatch(/repository .* exists/)
    expect(second.stderr).toMatch(/volume agent-42 exists/)

    const daemon = spawn('bash', [ENTRYPOINT, 'mount'], { env, stdio: ['ignore', 'pipe', 'pipe'] })
    let log = ''
    daemon.stderr.on('data', (d) => (log += d))
    const exited = new Promise<number | null>((resolve) => daemon.on('close', (code) => resolve(code)))
    const canonical = canonicalMountpoint(env.S0FS_MOUNTPOINT)
    for (let i = 0; i < 150 && (await mountState(canonical)) !== 'mounted'; i++) await new Promise((r) => setTimeout(r, 200))
    expect(await mountState(canonical), log).toBe('mounted')
    // The entrypoint execs the daemon itself, with the young generation the daemon's runtime wants.
    expect(readFileSync(`/proc/${daemon.pid}/environ`, 'utf8').split('\0')).toContain('NODE_OPTIONS=--max-semi-space-size=2')
    await mustSh(`echo from the sandbox > ${env.S0FS_MOUNTPOINT}/hello.txt`)
    daemon.kill('SIGTERM')
    expect(await exited).toBe(0)
    expect(await mountState(canonical)).toBe('none')
    const cat = await runCli(['cat', 'agent-42:/hello.txt'], { env })
    expect(cat.stdout).toBe('from the sandbox\n')

    const missing = await sh(`bash ${ENTRYPOINT} init`, { env: { ...env, S0FS_KEY_FILE: '', S0FS_PASSPHRASE: '' } })
    expect(missing.code).toBe(2)
    expect(missing.stderr).toMatch(/S0FS_KEY_FILE .* or S0FS_PASSPHRASE/)
  }, 180_000)

  it('the compose file wires MinIO, a one-shot init, the mount and a sandbox sharing it', async () => {
    const compose = await parseYaml(path.join(ROOT, 'docker/docker-compose.yml'))
    const s = compose.services
    expect(Object.keys(s).sort()).toEqual(['create-bucket', 'minio', 's0fs-init', 's0fs-mount', 'sandbox'])
    expect(s['s0fs-init'].command).toEqual(['init'])
    expect(s['s0fs-init'].environment.S0FS_REPO).toMatch(/^s3:\/\/s0fs\/.*endpoint=http:\/\/minio:9000/)
    expect(s['s0fs-mount'].depends_on['s0fs-init'].condition).toBe('service_completed_successfully')
    expect(s['s0fs-mount'].devices).toContain('/dev/fuse')
    expect(s['s0fs-mount'].cap_add).toContain('SYS_ADMIN')
    expect(s['s0fs-mount'].environment.S0FS_KEY_FILE).toBe(s['s0fs-init'].environment.S0FS_KEY_FILE)
    const shared = s['s0fs-mount'].volumes.find((v: any) => v.type === 'bind')
    expect(shared.bind.propagation).toBe('rshared')
    expect(s['s0fs-mount'].environment.S0FS_MOUNTPOINT.startsWith(shared.target)).toBe(true)
    const sandbox = s.sandbox.volumes.find((v: any) => v.type === 'bind')
    expect(sandbox.source).toBe(shared.source)
    expect(sandbox.bind.propagation).toBe('rslave')
  }, 30_000)

  it('the Kubernetes pod runs the mount as a sidecar the agent container sees', async () => {
    const pod = await parseYaml(path.join(ROOT, 'docker/k8s-pod.yaml'))
    expect(pod.kind).toBe('Pod')
    const [sidecar, agent] = pod.spec.containers
    expect(sidecar.args).toEqual(['mount'])
    expect(sidecar.securityContext.privileged).toBe(true)
    expect(sidecar.volumeMounts.find((m: any) => m.name === 'workspace').mountPropagation).toBe('Bidirectional')
    expect(agent.volumeMounts.find((m: any) => m.name === 'workspace').mountPropagation).toBe('HostToContainer')
    const env = Object.fromEntries(sidecar.env.map((e: any) => [e.name, e.value ?? e.valueFrom]))
    expect(env.S0FS_MOUNTPOINT.startsWith('/workspace/')).toBe(true)
    expect(env.AWS_SECRET_ACCESS_KEY.secretKeyRef.name).toBe('s0fs')
  }, 30_000)
})
