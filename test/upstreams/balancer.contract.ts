/** The behaviour every Balancer must have, run over each implementation by balancers.test.ts (like Hono's router cases). */
import assert from "node:assert/strict"
import { describe, test } from "node:test"
import { Backend } from "../../src/upstreams/backend.ts"
import type { Balancer, PickContext } from "../../src/upstreams/balancer.ts"

/** makeBackends builds backends on 127.0.0.1:3001.. with the given weights (and backup flags). */
export function makeBackends(
  specs: readonly (number | { weight?: number; backup?: boolean; maxConnections?: number; slowStart?: number })[],
): Backend[] {
  return specs.map((spec, i) => {
    const options = typeof spec === "number" ? { weight: spec } : spec
    return new Backend({ address: { host: "127.0.0.1", port: 3001 + i }, ...options })
  })
}

export interface ContractOptions {
  /** The balancer spreads by request key (hash): weight shares are measured over distinct keys. */
  keyed?: boolean
}

/** pickMany picks n times (with key k<i> when keyed) and counts picks per backend; undefined picks are counted too. */
function pickMany(
  balancer: Balancer,
  backends: readonly Backend[],
  n: number,
  context: PickContext = {},
): Map<Backend | undefined, number> {
  const counts = new Map<Backend | undefined, number>()
  for (let i = 0; i < n; i++) {
    const picked = balancer.pick(backends, { ...context, key: `client-${i}` })
    counts.set(picked, (counts.get(picked) ?? 0) + 1)
  }
  return counts
}

/** runBalancerContract registers the contract cases for one balancer; `make` returns a fresh instance per case. */
export function runBalancerContract(name: string, make: () => Balancer, options: ContractOptions = {}): void {
  const unit = options.keyed ? "distinct keys" : "picks"

  describe(`${name} (balancer contract)`, () => {
    test("returns undefined for an empty backend list", () => {
      assert.equal(make().pick([], { key: "a" }), undefined)
    })

    test("returns undefined when no backend is available", () => {
      const backends = makeBackends([1, 1, { backup: true }, { maxConnections: 1 }])
      backends[0]!.state = "down"
      backends[1]!.state = "draining"
      backends[2]!.ejectedUntil = Date.now() + 60_000
      backends[3]!.inFlight = 1
      const counts = pickMany(make(), backends, 200)
      assert.deepEqual([...counts], [[undefined, 200]])
    })

    test("only picks available backends (down, draining, ejected and full ones are skipped)", () => {
      const backends = makeBackends([1, 1, 1, { maxConnections: 2 }, 1])
      backends[0]!.state = "down"
      backends[1]!.state = "draining"
      backends[2]!.ejectedUntil = Date.now() + 60_000
      backends[3]!.inFlight = 2
      const counts = pickMany(make(), backends, 1000)
      assert.deepEqual([...counts], [[backends[4], 1000]])
    })

    test("an ejection that has ended no longer keeps the backend out", () => {
      const backends = makeBackends([1, 1])
      backends[0]!.ejectedUntil = Date.now() - 1
      const counts = pickMany(make(), backends, 1000)
      assert.ok((counts.get(backends[0]) ?? 0) > 0, "backend whose ejection ended was never picked")
    })

    test(`honours weights 1,2,3,4 within 2.5 points over 10,000 ${unit}`, () => {
      const backends = makeBackends([1, 2, 3, 4])
      const counts = pickMany(make(), backends, 10_000)
      assert.equal(counts.get(undefined), undefined)
      for (const backend of backends) {
        const share = (counts.get(backend) ?? 0) / 10_000
        const expected = backend.weight / 10
        assert.ok(
          Math.abs(share - expected) < 0.025,
          `${backend.id}: weight ${backend.weight} got ${(share * 100).toFixed(1)}%, expected ${expected * 100}%`,
        )
      }
    })

    test(`spreads equal weights evenly over 10,000 ${unit}`, () => {
      const backends = makeBackends([1, 1, 1, 1, 1])
      const counts = pickMany(make(), backends, 10_000)
      for (const backend of backends) {
        const share = (counts.get(backend) ?? 0) / 10_000
        assert.ok(Math.abs(share - 0.2) < 0.025, `${backend.id} got ${(share * 100).toFixed(1)}%`)
      }
    })

    test("never picks a backup while a primary is available", () => {
      const backends = makeBackends([1, 1, { backup: true, weight: 100 }])
      const counts = pickMany(make(), backends, 1000)
      assert.equal(counts.get(backends[2]), undefined)
      assert.equal((counts.get(backends[0]) ?? 0) + (counts.get(backends[1]) ?? 0), 1000)
    })

    test("picks backups only once every primary is down, and stops when one returns", () => {
      const backends = makeBackends([1, 1, { backup: true }, { backup: true }])
      const balancer = make()
      backends[0]!.state = "down"
      backends[1]!.ejectedUntil = Date.now() + 60_000
      const down = pickMany(balancer, backends, 1000)
      assert.equal((down.get(backends[2]) ?? 0) + (down.get(backends[3]) ?? 0), 1000)
      assert.ok((down.get(backends[2]) ?? 0) > 0 && (down.get(backends[3]) ?? 0) > 0, "backups not both used")
      backends[0]!.state = "up"
      const back = pickMany(balancer, backends, 1000)
      assert.deepEqual([...back], [[backends[0], 1000]])
    })

    test("honours context.exclude while another backend is available", () => {
      const backends = makeBackends([1, 1, 1])
      const counts = pickMany(make(), backends, 1000, { exclude: new Set([backends[0]!]) })
      assert.equal(counts.get(backends[0]), undefined)
      assert.equal((counts.get(backends[1]) ?? 0) + (counts.get(backends[2]) ?? 0), 1000)
    })

    test("goes to a backup after every primary was tried, before trying a primary again", () => {
      const backends = makeBackends([1, 1, { backup: true }])
      const counts = pickMany(make(), backends, 500, { exclude: new Set([backends[0]!, backends[1]!]) })
      assert.deepEqual([...counts], [[backends[2], 500]])
    })

    test("returns an already tried backend when it is the only available one", () => {
      const backends = makeBackends([1, 1, 1])
      backends[1]!.state = "down"
      backends[2]!.state = "down"
      const counts = pickMany(make(), backends, 200, { exclude: new Set([backends[0]!]) })
      assert.deepEqual([...counts], [[backends[0], 200]])
    })

    test("keeps working when the backend list is replaced by a different one", () => {
      const balancer = make()
      const first = makeBackends([1, 1, 1, 1])
      pickMany(balancer, first, 100)
      const second = makeBackends([1, 2])
      const counts = pickMany(balancer, second, 300)
      assert.equal((counts.get(second[0]) ?? 0) + (counts.get(second[1]) ?? 0), 300)
      assert.ok((counts.get(second[0]) ?? 0) > 0 && (counts.get(second[1]) ?? 0) > 0)
    })
  })
}
