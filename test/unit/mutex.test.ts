import { describe, expect, it } from 'vitest'
import { Mutex } from '../../src/fs/mutex.js'

describe('mutex', () => {
  it('runs holders one at a time, in arrival order, and stays locked across a hand-over', async () => {
    const lock = new Mutex()
    const order: string[] = []
    let inside = 0
    const holder = (name: string, ticks: number) =>
      lock.run(async () => {
        inside++
        expect(inside).toBe(1)
        order.push(`${name}:in`)
        for (let i = 0; i < ticks; i++) await Promise.resolve()
        order.push(`${name}:out`)
        inside--
        return name
      })
    const a = holder('a', 5)
    const b = holder('b', 0)
    const c = holder('c', 2)
    expect(lock.locked).toBe(true)
    await a
    // a has passed the lock to b: a newcomer now must queue behind b and c.
    expect(lock.locked).toBe(true)
    const d = holder('d', 0)
    expect(await Promise.all([b, c, d])).toEqual(['b', 'c', 'd'])
    expect(order).toEqual(['a:in', 'a:out', 'b:in', 'b:out', 'c:in', 'c:out', 'd:in', 'd:out'])
    expect(lock.locked).toBe(false)
  })

  it('is free again after a holder throws, synchronously or not', async () => {
    const lock = new Mutex()
    await expect(
      lock.run(() => {
        throw new Error('at once')
      }),
    ).rejects.toThrow('at once')
    expect(lock.locked).toBe(false)
    const waiting = lock.run(async () => 'next')
    await expect(lock.run(async () => Promise.reject(new Error('later')))).rejects.toThrow('later')
    expect(await waiting).toBe('next')
    expect(lock.locked).toBe(false)
  })
})
