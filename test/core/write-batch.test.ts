import assert from "node:assert/strict"
import { once } from "node:events"
import net from "node:net"
import { type TestContext, test } from "node:test"
import { setImmediate as nextRound } from "node:timers/promises"
import { hold, release } from "../../src/core/write-batch.ts"

/**
 * pairs opens n loopback connections; each server side collects what it reads until the client side ends. All are
 * closed when the test ends, passed or not.
 */
async function pairs(t: TestContext, n: number): Promise<{ clients: net.Socket[]; received: Promise<string>[] }> {
  const received: Promise<string>[] = []
  const accepted: ((s: net.Socket) => void)[] = []
  const server = net.createServer((s) => accepted.shift()!(s))
  server.listen(0, "127.0.0.1")
  await once(server, "listening")
  const { port } = server.address() as net.AddressInfo
  const clients: net.Socket[] = []
  for (let i = 0; i < n; i++) {
    received.push(
      new Promise((resolve) => {
        accepted.push((s) => {
          let text = ""
          s.setEncoding("latin1")
          s.on("data", (d: string) => {
            text += d
          })
          s.on("close", () => resolve(text))
          s.on("error", () => {})
        })
      }),
    )
    const c = net.connect(port, "127.0.0.1")
    c.on("error", () => {})
    await once(c, "connect")
    clients.push(c)
  }
  t.after(() => {
    for (const c of clients) c.destroy()
    server.close()
  })
  return { clients, received }
}

test("held writes stay corked until the end of the round, then every socket's bytes leave in order", async (t) => {
  const { clients, received } = await pairs(t, 3)
  clients.forEach((c, i) => {
    hold(c)
    c.write(`a${i}`)
    hold(c) // held already: a second hold changes nothing
    c.write(`b${i}`)
  })
  // Still in this round: nothing handed to the kernel yet (the bytes wait in the stream's buffer).
  for (const c of clients) {
    assert.equal(c.writableCorked, 1)
    assert.equal(c.writableLength, 4)
  }
  await nextRound()
  for (const c of clients) {
    assert.equal(c.writableCorked, 0)
    assert.equal(c.writableLength, 0)
    c.end()
  }
  assert.deepEqual(await Promise.all(received), ["a0b0", "a1b1", "a2b2"])
})

test("end() of a held socket sends what it holds first; release() before destroy() keeps the bytes", async (t) => {
  const { clients, received } = await pairs(t, 2)
  const [ended, destroyed] = clients as [net.Socket, net.Socket]
  hold(ended)
  ended.write("head ")
  ended.end("last")
  hold(destroyed)
  destroyed.write("written before the destroy")
  release(destroyed)
  assert.equal(destroyed.writableCorked, 0)
  destroyed.destroy()
  assert.deepEqual(await Promise.all(received), ["head last", "written before the destroy"])
})

test("a socket held while the round's flush runs waits for the next round, and a socket corked by its owner stays so", async (t) => {
  const { clients, received } = await pairs(t, 3)
  const [first, late, owned] = clients as [net.Socket, net.Socket, net.Socket]
  owned.cork()
  hold(owned) // corked by its owner: not held, the owner's uncork decides
  owned.write("owner's")
  hold(first)
  first.write("first", () => {
    // This callback runs from the flush's write: the socket held here goes out in the round after.
    hold(late)
    late.write("late")
    assert.equal(late.writableLength, 4)
  })
  await nextRound()
  await nextRound()
  await nextRound()
  assert.equal(late.writableCorked, 0)
  assert.equal(owned.writableCorked, 1)
  assert.equal(owned.writableLength, 7)
  owned.uncork()
  for (const c of clients) c.end()
  assert.deepEqual(await Promise.all(received), ["first", "late", "owner's"])
})
