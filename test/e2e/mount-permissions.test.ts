import { chmodSync, mkdirSync, statSync, writeFileSync } from 'node:fs'
import path from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { fileBackend, mountVolume, sh, type Backend, type Mounted } from '../helpers/mount.js'

/**
 * Permission checks as unprivileged users on a real mount (--allow-other):
 * the kernel checks access with the caller's credentials, the volume keeps
 * ownership, setgid inheritance and setuid clearing right.
 */

const NOBODY = 'setpriv --reuid=65534 --regid=65534 --clear-groups'
const OTHER = 'setpriv --reuid=1000 --regid=1000 --clear-groups'
const MEMBER = 'setpriv --reuid=1001 --regid=1001 --groups=100'

describe('permissions on a mounted volume, as unprivileged users', () => {
  let backend: Backend
  let m: Mounted
  let dir: string

  beforeAll(async () => {
    backend = await fileBackend()
    // Other users must be able to reach the mountpoint.
    chmodSync(backend.home, 0o711)
    m = await mountVolume(backend, { args: ['--allow-other'] })
    dir = path.join(m.mountpoint, 'perm')
    mkdirSync(dir, { mode: 0o755 })
  }, 120_000)

  afterAll(async () => {
    await m?.teardown()
    backend?.cleanup()
  }, 120_000)

  async function as(user: string, command: string): Promise<{ code: number; stderr: string; stdout: string }> {
    return sh(`${user} sh -c '${command}'`)
  }

  it('refuses reading and writing without permission (EACCES)', async () => {
    writeFileSync(path.join(dir, 'secret'), 'root only\n', { mode: 0o600 })
    const read = await as(NOBODY, `cat ${dir}/secret`)
    expect(read.code).not.toBe(0)
    expect(read.stderr).toMatch(/Permission denied/)
    const create = await as(NOBODY, `touch ${dir}/new`)
    expect(create.stderr).toMatch(/Permission denied/)
    writeFileSync(path.join(dir, 'readable'), 'everyone\n', { mode: 0o644 })
    expect((await as(NOBODY, `cat ${dir}/readable`)).stdout).toBe('everyone\n')
    expect((await as(NOBODY, `echo x >> ${dir}/readable`)).stderr).toMatch(/Permission denied/)
  })

  it('creates files owned by the caller, and lets a sticky directory protect them', async () => {
    const sticky = path.join(dir, 'sticky')
    mkdirSync(sticky)
    await sh(`chmod 1777 ${sticky}`)
    expect((await as(NOBODY, `echo mine > ${sticky}/nobodys`)).code).toBe(0)
    const st = statSync(path.join(sticky, 'nobodys'))
    expect([st.uid, st.gid]).toEqual([65534, 65534])
    const rm = await as(OTHER, `rm -f ${sticky}/nobodys`)
    expect(rm.stderr).toMatch(/Operation not permitted/)
    const mv = await as(OTHER, `mv ${sticky}/nobodys ${sticky}/stolen`)
    expect(mv.stderr).toMatch(/Operation not permitted/)
    expect((await as(NOBODY, `rm ${sticky}/nobodys`)).code).toBe(0)
  })

  it('applies chmod and chown rules (EPERM)', async () => {
    writeFileSync(path.join(dir, 'owned'), 'x')
    expect((await as(NOBODY, `chmod 777 ${dir}/owned`)).stderr).toMatch(/Operation not permitted/)
    await sh(`chown 65534:65534 ${dir}/owned`)
    expect((await as(NOBODY, `chmod 640 ${dir}/owned`)).code).toBe(0)
    expect(statSync(path.join(dir, 'owned')).mode & 0o777).toBe(0o640)
    expect((await as(NOBODY, `chown 1000 ${dir}/owned`)).stderr).toMatch(/Operation not permitted/)
    expect((await as(NOBODY, `chgrp 100 ${dir}/owned`)).stderr).toMatch(/Operation not permitted/)
    // A member of group 100 who owns the file may give it to that group.
    writeFileSync(path.join(dir, 'member'), 'x')
    await sh(`chown 1001:1001 ${dir}/member`)
    expect((await as(MEMBER, `chgrp 100 ${dir}/member`)).code).toBe(0)
    expect(statSync(path.join(dir, 'member')).gid).toBe(100)
  })

  it('hands a setgid directory\'s group down, and clears setuid when someone else writes', async () => {
    const sg = path.join(dir, 'shared')
    mkdirSync(sg)
    await sh(`chgrp 100 ${sg} && chmod 2777 ${sg}`)
    expect((await as(NOBODY, `touch ${sg}/f && mkdir ${sg}/d`)).code).toBe(0)
    expect(statSync(path.join(sg, 'f')).gid).toBe(100)
    expect(statSync(path.join(sg, 'd')).gid).toBe(100)
    expect(statSync(path.join(sg, 'd')).mode & 0o2000).toBe(0o2000)
    const prog = path.join(dir, 'prog')
    writeFileSync(prog, '#!/bin/sh\n')
    await sh(`chmod 4777 ${prog}`)
    expect(statSync(prog).mode & 0o4000).toBe(0o4000)
    expect((await as(OTHER, `echo >> ${prog}`)).code).toBe(0)
    expect(statSync(prog).mode & 0o4000).toBe(0)
  })

  it('keeps ownership and modes across unmount and mount', async () => {
    await m.umount()
    m = await mountVolume(backend, { mountpoint: m.mountpoint, args: ['--allow-other'] })
    expect(statSync(path.join(dir, 'owned')).uid).toBe(65534)
    expect(statSync(path.join(dir, 'shared/f')).gid).toBe(100)
    expect(statSync(path.join(dir, 'sticky')).mode & 0o1777).toBe(0o1777)
    expect((await as(NOBODY, `cat ${dir}/secret`)).stderr).toMatch(/Permission denied/)
  }, 120_000)
})
