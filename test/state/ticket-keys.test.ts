/** MemoryTicketKeyRing: the current key, rotation, keep and grace period, change subscription, no key in logs. */
import assert from "node:assert/strict"
import { test } from "node:test"
import { inspect } from "node:util"
import { Secret } from "../../src/core/secret.ts"
import { deriveTicketKey, MemoryTicketKeyRing, TICKET_KEY_BYTES } from "../../src/state/ticket-keys.ts"

/** A clock the test moves by hand. */
function clock(start = 1_000_000) {
  let now = start
  return { now: () => now, advance: (ms: number) => (now += ms) }
}

test("the ring starts with one random 48-byte key; its name is the hex of the first 16 bytes", () => {
  const ring = new MemoryTicketKeyRing()
  const key = ring.current()
  const material = key.material.reveal()
  assert.equal(material.length, TICKET_KEY_BYTES)
  assert.equal(key.name, material.subarray(0, 16).toString("hex"))
  assert.deepEqual(ring.keys(), [key])
  assert.notEqual(new MemoryTicketKeyRing().current().name, key.name, "two rings draw different keys")
})

test("rotate makes a new current key and keeps the previous ones newest first", () => {
  const ring = new MemoryTicketKeyRing({ keep: 2 })
  const a = ring.current()
  const b = ring.rotate()
  assert.equal(ring.current(), b)
  assert.notEqual(b.name, a.name)
  assert.deepEqual(
    ring.keys().map((k) => k.name),
    [b.name, a.name],
  )
})

test("past keep rotations, the oldest key is dropped (table: rotations -> keys held)", () => {
  const ring = new MemoryTicketKeyRing({ keep: 2 })
  const made = [ring.current().name]
  const expected = [1, 2, 3, 3, 3]
  const held: number[] = [ring.keys().length]
  for (let i = 1; i < expected.length; i++) {
    made.unshift(ring.rotate().name)
    held.push(ring.keys().length)
  }
  assert.deepEqual(held, expected)
  assert.deepEqual(
    ring.keys().map((k) => k.name),
    made.slice(0, 3),
  )
})

test("a previous key is dropped once its grace period has passed since it stopped being current", () => {
  const time = clock()
  const ring = new MemoryTicketKeyRing({ keep: 5, graceMs: 60_000, now: time.now })
  const a = ring.current()
  time.advance(10 * 60_000) // a was current a long time: grace counts from its retirement, not its making
  const b = ring.rotate()
  time.advance(59_999)
  assert.deepEqual(
    ring.keys().map((k) => k.name),
    [b.name, a.name],
  )
  time.advance(1)
  assert.deepEqual(
    ring.keys().map((k) => k.name),
    [b.name],
  )
  // The current key is never dropped, however old.
  time.advance(10 * 60_000)
  assert.equal(ring.keys()[0], b)
})

test("keep: 0 holds the current key alone", () => {
  const ring = new MemoryTicketKeyRing({ keep: 0 })
  const b = ring.rotate()
  assert.deepEqual(ring.keys(), [b])
})

test("onChange listeners hear every rotation until they unsubscribe", () => {
  const ring = new MemoryTicketKeyRing()
  const seen: string[] = []
  const off = ring.onChange((r) => seen.push(r.current().name))
  const b = ring.rotate()
  const c = ring.rotate()
  off()
  ring.rotate()
  assert.deepEqual(seen, [b.name, c.name])
})

test("keys come from the random source given (a store can seed them) and must be 48 bytes", () => {
  let n = 0
  const ring = new MemoryTicketKeyRing({ random: (bytes) => Buffer.alloc(bytes, ++n) })
  assert.equal(ring.current().name, "01".repeat(16))
  assert.equal(ring.rotate().name, "02".repeat(16))
  assert.throws(() => new MemoryTicketKeyRing({ random: () => Buffer.alloc(32) }), RangeError)
})

test("a ring started with another's keys holds them, their retirement times and their rotation schedule", () => {
  const time = clock()
  const old = new MemoryTicketKeyRing({ keep: 5, graceMs: 60_000, now: time.now })
  const a = old.current()
  time.advance(30_000)
  const b = old.rotate()
  time.advance(50_000)
  const ring = new MemoryTicketKeyRing({ keep: 5, graceMs: 60_000, now: time.now, keys: old.keys() })
  assert.deepEqual(
    ring.keys().map((k) => k.name),
    [b.name, a.name],
  )
  // a stopped being current when b was made (50 s ago): it goes 10 s from now, as it would have in the old ring.
  time.advance(10_000)
  assert.deepEqual(
    ring.keys().map((k) => k.name),
    [b.name],
  )
  // b was made 60 s ago: a rotation every 60 s is due now, one every 61 s is not.
  assert.equal(ring.rotateIfDue(61_000), false)
  assert.equal(ring.rotateIfDue(60_000), true)
  assert.throws(() => new MemoryTicketKeyRing({ keys: [{ ...a, material: new Secret(Buffer.alloc(32)) }] }), RangeError)
})

test("key material never prints", () => {
  const key = new MemoryTicketKeyRing().current()
  const hex = key.material.reveal().toString("hex")
  for (const text of [inspect(key), JSON.stringify(key), String(key.material)]) {
    assert.ok(!text.includes(hex.slice(32)), text)
    assert.ok(text.includes("[redacted]"), text)
  }
})

test("deriveTicketKey gives each listener its own stable 48-byte key from one ring key", () => {
  const ring = new MemoryTicketKeyRing()
  const web = deriveTicketKey(ring.current(), "web")
  assert.equal(web.length, TICKET_KEY_BYTES)
  assert.deepEqual(deriveTicketKey(ring.current(), "web"), web, "the same listener gets the same key again")
  assert.notDeepEqual(deriveTicketKey(ring.current(), "api"), web)
  assert.notDeepEqual(deriveTicketKey(ring.rotate(), "web"), web, "a rotation changes it")
})
