/** BoundedQueue: slots, FIFO waiters, queue full, timeout, abort. */
import assert from "node:assert/strict"
import { test } from "node:test"
import { BoundedQueue } from "../../../src/listeners/limits/concurrency-queue.ts"

test("hands out slots up to the limit at once", async () => {
  const queue = new BoundedQueue({ limit: 2, queueSize: 0, timeout: 1000, name: "127.0.0.1:3001" })
  const a = await queue.acquire()
  const b = await queue.acquire()
  assert.equal(queue.active, 2)
  await assert.rejects(queue.acquire(), { code: "PC_BACKEND_QUEUE_FULL" })
  a()
  b()
  assert.equal(queue.active, 0)
})

test("a released slot goes to the oldest waiter, in order", async () => {
  const queue = new BoundedQueue({ limit: 1, queueSize: 3, timeout: 5000 })
  const first = await queue.acquire()
  const order: number[] = []
  const waits = [1, 2, 3].map((n) =>
    queue.acquire().then((release) => {
      order.push(n)
      return release
    }),
  )
  assert.equal(queue.waiting, 3)
  assert.equal(queue.tryAcquire(), undefined, "a newcomer does not overtake the waiters")
  first()
  const r1 = await waits[0]!
  r1()
  const r2 = await waits[1]!
  r2()
  const r3 = await waits[2]!
  assert.deepEqual(order, [1, 2, 3])
  assert.equal(queue.active, 1)
  r3()
  assert.equal(queue.active, 0)
  assert.equal(queue.waiting, 0)
})

test("rejects with PC_BACKEND_QUEUE_FULL when queueSize callers already wait", async () => {
  const queue = new BoundedQueue({ limit: 1, queueSize: 1, timeout: 5000, name: "127.0.0.1:3001" })
  const held = await queue.acquire()
  const waiting = queue.acquire()
  await assert.rejects(queue.acquire(), (err: Error & { code?: string }) => {
    assert.equal(err.code, "PC_BACKEND_QUEUE_FULL")
    assert.match(err.message, /127\.0\.0\.1:3001: queue full/)
    return true
  })
  held()
  ;(await waiting)()
})

test("rejects with PC_BACKEND_QUEUE_TIMEOUT after waiting too long, and leaves the queue", async () => {
  const queue = new BoundedQueue({ limit: 1, queueSize: 5, timeout: 5000 })
  const held = await queue.acquire()
  const started = Date.now()
  await assert.rejects(queue.acquire(30), { code: "PC_BACKEND_QUEUE_TIMEOUT" })
  assert.ok(Date.now() - started >= 25)
  assert.equal(queue.waiting, 0)
  held()
  assert.equal(queue.active, 0, "the slot is freed, not given to the timed-out waiter")
})

test("an aborted waiter leaves the queue with the signal's reason", async () => {
  const queue = new BoundedQueue({ limit: 1, queueSize: 5, timeout: 5000 })
  const held = await queue.acquire()
  const controller = new AbortController()
  const waiting = queue.acquire(5000, controller.signal)
  controller.abort(new Error("client went away"))
  await assert.rejects(waiting, /client went away/)
  assert.equal(queue.waiting, 0)
  held()
  assert.equal(queue.active, 0)
})

test("calling a release twice frees one slot only", async () => {
  const queue = new BoundedQueue({ limit: 2, queueSize: 0, timeout: 1000 })
  const a = await queue.acquire()
  await queue.acquire()
  a()
  a()
  assert.equal(queue.active, 1)
})

test("destroy rejects waiters and refuses newcomers", async () => {
  const queue = new BoundedQueue({ limit: 1, queueSize: 2, timeout: 5000 })
  const held = await queue.acquire()
  const waiting = queue.acquire()
  queue.destroy()
  await assert.rejects(waiting, { code: "PC_BACKEND_QUEUE_CLOSED" })
  await assert.rejects(queue.acquire(), { code: "PC_BACKEND_QUEUE_CLOSED" })
  held()
})
