/** session_tickets parsing, the ring schedule merged from the listeners, and TicketRotation's timer on a real ring. */
import assert from "node:assert/strict"
import { test } from "node:test"
import { parseConfig } from "../../src/config/load.ts"
import { ConfigError } from "../../src/core/errors.ts"
import { silentLogger } from "../../src/core/log.ts"
import { MemoryTicketKeyRing, type TicketKey, type TicketKeyRing } from "../../src/state/ticket-keys.ts"
import { listenerTickets, ringSchedule, TicketRotation } from "../../src/state/ticket-rotation.ts"

function tlsOf(sessionTickets: string): ReturnType<typeof parseConfig>["listeners"][number]["tls"] {
  const config = parseConfig(
    `
listeners:
  - name: web
    address: "127.0.0.1:8443"
    tls: { certificates: [{ cert: a.pem, key: a.key }], session_tickets: ${sessionTickets} }
    upstream: u
upstreams: { u: { backends: ["127.0.0.1:2"] } }
`,
    "inline.yaml",
    "/srv/portcullis",
  )
  return config.listeners[0]!.tls
}

test("session_tickets: true, false and { rotate, keep } (defaults 12h and 2)", () => {
  assert.deepEqual(listenerTickets(tlsOf("true")!), { enabled: true })
  assert.deepEqual(listenerTickets(tlsOf("false")!), { enabled: false })
  assert.deepEqual(listenerTickets(tlsOf("{}")!), {
    enabled: true,
    graceMs: 24 * 3_600_000,
    lifetimeS: 24 * 3600,
    schedule: { rotateMs: 12 * 3_600_000, keep: 2 },
  })
  const once = listenerTickets(tlsOf("{ rotate: 30m, keep: 0 }")!)
  assert.equal(once.graceMs, 0, "keep 0: only the current key opens")
  assert.equal(once.lifetimeS, 1800, "keep 0: a ticket lives at most one period")
  assert.equal(listenerTickets(tlsOf("{ rotate: 7d, keep: 4 }")!).lifetimeS, 7 * 24 * 3600, "RFC 8446: 7 days at most")
})

test("session_tickets refuses a period under 1s, a negative keep and unknown keys", () => {
  for (const bad of ["{ rotate: 500ms }", "{ keep: -1 }", "{ rotate: 1h, every: 2 }", '"yes"']) {
    assert.throws(() => tlsOf(bad), ConfigError, bad)
  }
})

test("ringSchedule: the shortest period, keys held as long as the most patient listener honours them", () => {
  assert.equal(ringSchedule([{ session_tickets: true }, { session_tickets: false }]), undefined)
  assert.deepEqual(
    ringSchedule([
      { session_tickets: { rotate: 12 * 3_600_000, keep: 2 } },
      { session_tickets: { rotate: 3_600_000, keep: 1 } },
      { session_tickets: true },
    ]),
    { rotateMs: 3_600_000, keep: 24, graceMs: 24 * 3_600_000 },
  )
})

test("TicketRotation rotates the ring when its current key is rotate old, again and again, and stops on close", async () => {
  const ring = new MemoryTicketKeyRing()
  const rotation = new TicketRotation(ring, silentLogger())
  const names: string[] = [ring.current().name]
  const done = new Promise<void>((resolve) => {
    ring.onChange((r) => {
      names.push(r.current().name)
      if (names.length === 3) resolve()
    })
  })
  const started = Date.now()
  rotation.apply({ rotateMs: 1000, keep: 2, graceMs: 2000 })
  const timeout = setTimeout(() => assert.fail("no two rotations within 6 s"), 6000)
  await done
  clearTimeout(timeout)
  rotation.close()
  assert.equal(new Set(names).size, 3)
  assert.ok(Date.now() - started >= 1500, "not before the period")
  assert.equal(ring.keys().length, 3, "the schedule's keep is applied to the ring")
})

test("TicketRotation leaves a ring that does not take part in scheduling (a worker's, fed by its primary) alone", async () => {
  const inner = new MemoryTicketKeyRing({ now: () => Date.now() - 3_600_000 })
  let rotations = 0
  const fed: TicketKeyRing = {
    current: (): TicketKey => inner.current(),
    keys: () => inner.keys(),
    rotate: () => {
      rotations++
      return inner.rotate()
    },
    onChange: (l) => inner.onChange(l),
  }
  const rotation = new TicketRotation(fed, silentLogger())
  // Its key is an hour old: a scheduled ring would be rotated on the next timer turn.
  rotation.apply({ rotateMs: 1000, keep: 1, graceMs: 1000 })
  await new Promise((resolve) => setTimeout(resolve, 50))
  rotation.close()
  assert.equal(rotations, 0)
})
