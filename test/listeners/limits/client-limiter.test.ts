/** ClientLimiter: per-IP connection and request-rate limits in bounded memory. */
import assert from "node:assert/strict"
import { test } from "node:test"
import { ClientLimiter, clientKey } from "../../../src/listeners/limits/client-limiter.ts"

test("refuses a client's connection past its limit, and allows it again after one closes", () => {
  const limiter = new ClientLimiter({ maxConnections: 2 })
  assert.equal(limiter.openConnection("10.0.0.1", 0), true)
  assert.equal(limiter.openConnection("10.0.0.1", 0), true)
  assert.equal(limiter.openConnection("10.0.0.1", 0), false)
  assert.equal(limiter.openConnection("10.0.0.2", 0), true, "another client is not affected")
  limiter.closeConnection("10.0.0.1", 1)
  assert.equal(limiter.openConnection("10.0.0.1", 1), true)
  assert.equal(limiter.connections("10.0.0.1"), 2)
  assert.equal(limiter.status().refused_connections, 1)
})

test("an extra closeConnection does not make room for more", () => {
  const limiter = new ClientLimiter({ maxConnections: 1 })
  limiter.openConnection("10.0.0.1", 0)
  limiter.closeConnection("10.0.0.1", 0)
  limiter.closeConnection("10.0.0.1", 0)
  assert.equal(limiter.openConnection("10.0.0.1", 0), true)
  assert.equal(limiter.openConnection("10.0.0.1", 0), false)
})

test("limits each client's request rate with a burst and says when to retry", () => {
  const limiter = new ClientLimiter({ maxConnections: 0, rate: { perSecond: 2, burst: 3 } })
  const first = Array.from({ length: 4 }, () => limiter.takeRequest("10.0.0.1", 1000))
  assert.deepEqual(first, [true, true, true, false])
  assert.equal(limiter.takeRequest("10.0.0.2", 1000), true, "another client has its own bucket")
  assert.equal(limiter.retryAfterSeconds("10.0.0.1", 1000), 1)
  assert.equal(limiter.takeRequest("10.0.0.1", 1500), true)
  assert.equal(limiter.status().refused_requests, 1)
})

test("with no limits configured it is disabled and tracks nothing", () => {
  const limiter = new ClientLimiter({ maxConnections: 0 })
  assert.equal(limiter.enabled, false)
  for (let i = 0; i < 1000; i++) {
    assert.equal(limiter.openConnection(`10.0.${i >> 8}.${i & 255}`), true)
    assert.equal(limiter.takeRequest(`10.0.${i >> 8}.${i & 255}`), true)
  }
  assert.equal(limiter.size, 0)
})

test("stays within maxClients under a flood of distinct addresses", () => {
  const limiter = new ClientLimiter({ maxConnections: 10, rate: { perSecond: 1, burst: 1 }, maxClients: 1000 })
  for (let i = 0; i < 50_000; i++) {
    const ip = `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`
    limiter.openConnection(ip, i)
    limiter.takeRequest(ip, i)
    limiter.closeConnection(ip, i)
    assert.ok(limiter.size <= 1000, `size ${limiter.size} after ${i + 1} clients`)
  }
})

test("never evicts a client holding connections, so its count is not lost", () => {
  const limiter = new ClientLimiter({ maxConnections: 1, maxClients: 100 })
  assert.equal(limiter.openConnection("192.0.2.1", 0), true)
  for (let i = 0; i < 10_000; i++) {
    const ip = `10.0.${(i >> 8) & 255}.${i & 255}`
    limiter.openConnection(ip, i)
    limiter.closeConnection(ip, i)
  }
  assert.equal(limiter.openConnection("192.0.2.1", 10_000), false, "its one connection is still counted")
  assert.ok(limiter.size <= 101, `size ${limiter.size}`)
})

test("sweep forgets idle clients but keeps connected ones and those with a draining bucket", () => {
  const limiter = new ClientLimiter({ maxConnections: 5, rate: { perSecond: 1, burst: 2 }, idleMs: 60_000 })
  limiter.openConnection("10.0.0.1", 0) // stays connected
  limiter.openConnection("10.0.0.2", 0)
  limiter.closeConnection("10.0.0.2", 0) // idle
  limiter.takeRequest("10.0.0.3", 59_999)
  limiter.takeRequest("10.0.0.3", 59_999) // bucket empty, seen recently
  assert.equal(limiter.sweep(60_000), 1)
  assert.equal(limiter.size, 2)
  assert.equal(limiter.connections("10.0.0.1"), 1)
  assert.equal(limiter.sweep(200_000), 1, "10.0.0.3 is idle and its bucket full again")
  assert.equal(limiter.size, 1)
})

test("start and close run and stop the sweep timer", (t) => {
  const limiter = new ClientLimiter({ maxConnections: 1 })
  t.after(() => limiter.close())
  limiter.start()
  limiter.openConnection("10.0.0.1")
  limiter.close()
  assert.equal(limiter.size, 0)
})

test("clientKey keeps IPv4, unwraps IPv4-mapped IPv6 and groups IPv6 by /64", () => {
  const table: [string, string][] = [
    ["192.0.2.1", "192.0.2.1"],
    ["::ffff:192.0.2.1", "192.0.2.1"],
    ["2001:db8:1:2:aaaa:bbbb:cccc:dddd", "2001:db8:1:2::/64"],
    ["2001:DB8:1:2::1", "2001:db8:1:2::/64"],
    ["2001:0db8:0001:0002:0000:0000:0000:0001", "2001:db8:1:2::/64"],
    ["2001:db8::1", "2001:db8:0:0::/64"],
    ["::1", "0:0:0:0::/64"],
    ["fe80::1%eth0", "fe80:0:0:0::/64"],
  ]
  for (const [address, key] of table) assert.equal(clientKey(address), key, address)
})
