/**
 * PrimaryRates' relay (pure logic; the end-to-end behaviour is test/cluster/workers-rate.test.ts): what one worker
 * accepted is owed by every other worker, never by itself, summed per client, in one message per worker and
 * listener per turn of the event loop.
 */
import assert from "node:assert/strict"
import { test } from "node:test"
import { PrimaryRates, type RatePeer, type SpendMessage } from "../../src/cluster/primary-rates.ts"

function peer(): RatePeer & { got: SpendMessage[] } {
  const got: SpendMessage[] = []
  return { got, send: (msg) => got.push(msg) }
}

test("counts from one worker are spent by every other worker, summed per client and listener", async () => {
  const a = peer()
  const b = peer()
  const c = peer()
  const rates = new PrimaryRates(undefined, () => [a, b, c])
  rates.counts(a, { type: "rates", listener: "web", fleet: false, counts: [["192.0.2.1", 3]] })
  rates.counts(b, { type: "rates", listener: "web", fleet: false, counts: [["192.0.2.1", 2]] })
  rates.counts(a, { type: "rates", listener: "api", fleet: false, counts: [["192.0.2.9", 1]] })
  await new Promise((r) => setImmediate(r))
  const table = (p: { got: SpendMessage[] }) =>
    Object.fromEntries(p.got.map((m) => [m.listener, Object.fromEntries(m.spends)]))
  assert.deepEqual(table(a), { web: { "192.0.2.1": 2 } })
  assert.deepEqual(table(b), { web: { "192.0.2.1": 3 }, api: { "192.0.2.9": 1 } })
  assert.deepEqual(table(c), { web: { "192.0.2.1": 5 }, api: { "192.0.2.9": 1 } })
  rates.close()
})
