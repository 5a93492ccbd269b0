/** Balancers: the shared contract over every implementation, then each policy's own behaviour. */
import assert from "node:assert/strict"
import { describe, test } from "node:test"
import type { Backend } from "../../src/upstreams/backend.ts"
import type { Balancer } from "../../src/upstreams/balancer.ts"
import { ConsistentHash } from "../../src/upstreams/balancers/hash.ts"
import { type BalancerName, createBalancer } from "../../src/upstreams/balancers/index.ts"
import { LeastConn } from "../../src/upstreams/balancers/least-conn.ts"
import { PowerOfTwo } from "../../src/upstreams/balancers/p2c.ts"
import { RoundRobin } from "../../src/upstreams/balancers/round-robin.ts"
import { StickyCookie, stickyValue } from "../../src/upstreams/balancers/sticky-cookie.ts"
import { makeBackends, runBalancerContract } from "./balancer.contract.ts"

/** seeded is mulberry32: a small deterministic PRNG so p2c tests are repeatable. */
function seeded(seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

runBalancerContract("RoundRobin", () => new RoundRobin())
runBalancerContract("LeastConn", () => new LeastConn())
runBalancerContract("PowerOfTwo (seeded)", () => new PowerOfTwo(seeded(42)))
runBalancerContract("PowerOfTwo (Math.random)", () => new PowerOfTwo())
runBalancerContract("ConsistentHash", () => new ConsistentHash(), { keyed: true })
runBalancerContract("StickyCookie over RoundRobin, no cookie", () => new StickyCookie(new RoundRobin()))
for (const name of ["round_robin", "least_conn", "p2c", "hash"] as const satisfies readonly BalancerName[]) {
  runBalancerContract(`createBalancer("${name}")`, () => createBalancer(name), { keyed: name === "hash" })
}

const NAMES = "abcdef"

/** letters names each pick by its backend's index: a, b, c ...; "-" for none. */
function letter(backends: readonly Backend[], picked: Backend | undefined): string {
  return picked ? NAMES[backends.indexOf(picked)]! : "-"
}

interface FailureRow {
  name: string
  weights: number[]
  /** Before pick number N (1-based), set these backends' state. */
  events: Record<number, [string, "up" | "down"][]>
  expected: string
}

/** run plays a failure table against a balancer and returns the pick sequence as letters. */
function play(balancer: Balancer, row: FailureRow): string {
  const backends = makeBackends(row.weights)
  let out = ""
  for (let i = 1; i <= row.expected.length; i++) {
    for (const [who, state] of row.events[i] ?? []) backends[NAMES.indexOf(who)]!.state = state
    out += letter(backends, balancer.pick(backends))
  }
  return out
}

describe("RoundRobin", () => {
  test("weights 5,1,1 interleave as a a b a c a a, repeating, with no burst of a", () => {
    const backends = makeBackends([5, 1, 1])
    const rr = new RoundRobin()
    let out = ""
    for (let i = 0; i < 21; i++) out += letter(backends, rr.pick(backends))
    assert.equal(out, "aabacaa".repeat(3))
  })

  const table: FailureRow[] = [
    { name: "equal weights rotate", weights: [1, 1, 1], events: {}, expected: "abcabcabc" },
    // b's turn is not given to a: c, which was next, goes on; the pool of two then alternates.
    { name: "b down from the 3rd pick", weights: [1, 1, 1], events: { 3: [["b", "down"]] }, expected: "abccacaca" },
    {
      name: "b down for picks 3-5, then back in rotation",
      weights: [1, 1, 1],
      events: { 3: [["b", "down"]], 6: [["b", "up"]] },
      expected: "abccacabcabc",
    },
    {
      name: "all down, then a returns, then b and c",
      weights: [1, 1, 1],
      events: {
        1: [
          ["a", "down"],
          ["b", "down"],
          ["c", "down"],
        ],
        3: [["a", "up"]],
        5: [
          ["b", "up"],
          ["c", "up"],
        ],
      },
      expected: "--aaabcabc",
    },
    {
      name: "weights 2,1 with a down for picks 4-6",
      weights: [2, 1],
      events: { 4: [["a", "down"]], 7: [["a", "up"]] },
      expected: "ababbbabaaba",
    },
  ]
  for (const row of table) {
    test(`failure table: ${row.name}: ${row.expected}`, () => {
      assert.equal(play(new RoundRobin(), row), row.expected)
    })
  }
})

describe("LeastConn", () => {
  test("picks the lowest in-flight per weight", () => {
    const backends = makeBackends([1, 2, 1])
    backends[0]!.inFlight = 2 // 2.0
    backends[1]!.inFlight = 3 // 1.5
    backends[2]!.inFlight = 2 // 2.0
    assert.equal(new LeastConn().pick(backends), backends[1])
  })

  test("breaks ties by weighted round robin: weights 2,1,1 idle give a b c a a b c a", () => {
    const backends = makeBackends([2, 1, 1])
    const lc = new LeastConn()
    let out = ""
    for (let i = 0; i < 8; i++) out += letter(backends, lc.pick(backends))
    assert.equal(out, "abcaabca")
  })

  test("follows load as requests start and finish (table)", () => {
    const backends = makeBackends([1, 1, 1])
    const lc = new LeastConn()
    const steps: [string, string][] = [
      // [action, expected pick or "" ] where action is "pick" or "done X"
      ["pick", "a"],
      ["pick", "b"],
      ["pick", "c"],
      ["done b", ""],
      ["pick", "b"],
      ["done a", ""],
      ["done c", ""],
      // a and c tie at 0: c wins the tie-break, its round-robin turn being older; then a is least loaded;
      // then all tie at 1 and c's turn comes first again.
      ["pick", "c"],
      ["pick", "a"],
      ["pick", "c"],
    ]
    for (const [action, expected] of steps) {
      if (action === "pick") {
        const picked = lc.pick(backends)!
        picked.inFlight++
        assert.equal(letter(backends, picked), expected, `after ${action}`)
      } else {
        backends[NAMES.indexOf(action.slice(5))]!.inFlight--
      }
    }
  })
})

describe("PowerOfTwo", () => {
  test("never picks the single most loaded backend while two or more are eligible", () => {
    const backends = makeBackends([1, 1, 1])
    backends[1]!.inFlight = 10
    backends[0]!.inFlight = 1
    const p2c = new PowerOfTwo(seeded(7))
    const counts = new Map<Backend | undefined, number>()
    for (let i = 0; i < 2000; i++) {
      const b = p2c.pick(backends)
      counts.set(b, (counts.get(b) ?? 0) + 1)
    }
    assert.equal(counts.get(backends[1]), undefined)
    // c (idle) wins whenever it is drawn, which is 2 draws in 3; a only when drawn with b.
    const c = (counts.get(backends[2]) ?? 0) / 2000
    assert.ok(c > 0.6 && c < 0.73, `idle backend got ${c}`)
  })

  test("compares the two drawn backends by load: injected draws decide", () => {
    const backends = makeBackends([1, 1, 1, 1])
    backends[0]!.inFlight = 3
    backends[3]!.inFlight = 1
    // First draw 0.0 -> a; second from b,c,d (total 3): 0.9 * 3 = 2.7 -> d. d (1) < a (3).
    const draws = [0.0, 0.9]
    const p2c = new PowerOfTwo(() => draws.shift()!)
    assert.equal(p2c.pick(backends), backends[3])
    assert.equal(draws.length, 0)
  })

  test("with equal loads takes the first draw, so idle picks follow weight", () => {
    const backends = makeBackends([3, 1])
    const draws = [0.5, 0.5, 0.9, 0.1]
    const p2c = new PowerOfTwo(() => draws.shift()!)
    // 0.5 * 4 = 2 -> a (weight 3); then b. 0.9 * 4 = 3.6 -> b; then a.
    assert.equal(p2c.pick(backends), backends[0])
    assert.equal(p2c.pick(backends), backends[1])
  })
})

describe("ConsistentHash", () => {
  const keys = Array.from({ length: 10_000 }, (_, i) => `10.${(i >> 8) & 255}.${i & 255}.${i % 7}`)

  function mapping(hash: Balancer, backends: readonly Backend[]): (Backend | undefined)[] {
    return keys.map((key) => hash.pick(backends, { key }))
  }

  test("the same key always goes to the same backend", () => {
    const backends = makeBackends([1, 1, 1, 1])
    const hash = new ConsistentHash()
    for (const key of keys.slice(0, 200)) {
      const first = hash.pick(backends, { key })
      for (let i = 0; i < 5; i++) assert.equal(hash.pick(backends, { key }), first)
    }
  })

  test("removing 1 of 5 backends moves only its keys, 15-25% of 10,000", () => {
    const backends = makeBackends([1, 1, 1, 1, 1])
    const hash = new ConsistentHash()
    const before = mapping(hash, backends)
    const removed = backends[2]!
    const after = mapping(
      hash,
      backends.filter((b) => b !== removed),
    )
    let moved = 0
    for (let i = 0; i < keys.length; i++) {
      if (before[i] === after[i]) continue
      moved++
      assert.equal(before[i], removed, `key ${keys[i]} moved from ${before[i]?.id}, which was not removed`)
    }
    const share = moved / keys.length
    assert.ok(share > 0.15 && share < 0.25, `moved ${(share * 100).toFixed(1)}% of keys`)
  })

  test("a down backend's keys walk to other backends, spread over all of them, and come back when it returns", () => {
    const backends = makeBackends([1, 1, 1, 1])
    const hash = new ConsistentHash()
    const before = mapping(hash, backends)
    backends[0]!.state = "down"
    const during = mapping(hash, backends)
    const receivers = new Map<Backend | undefined, number>()
    for (let i = 0; i < keys.length; i++) {
      if (before[i] !== backends[0]) assert.equal(during[i], before[i])
      else receivers.set(during[i], (receivers.get(during[i]) ?? 0) + 1)
    }
    assert.equal(receivers.size, 3, "the down backend's keys should spread over all three others")
    for (const [backend, n] of receivers) assert.ok(n > 400, `${backend?.id} took only ${n} keys`)
    backends[0]!.state = "up"
    assert.deepEqual(mapping(hash, backends), before)
  })

  test("the mapping depends on backend ids, not their order in the list or the Backend objects", () => {
    const hash = new ConsistentHash()
    const a = makeBackends([1, 2, 3])
    const b = makeBackends([1, 2, 3]).reverse()
    for (const key of keys.slice(0, 500)) assert.equal(hash.pick(a, { key })!.id, hash.pick(b, { key })!.id)
  })

  test("without a key spreads requests by round robin", () => {
    const backends = makeBackends([1, 1, 1])
    const hash = new ConsistentHash()
    const out = Array.from({ length: 6 }, () => letter(backends, hash.pick(backends)))
    assert.equal(out.join(""), "abcabc")
  })
})

describe("StickyCookie", () => {
  test("pins to the backend its cookie names", () => {
    const backends = makeBackends([1, 1, 1])
    const sticky = new StickyCookie(new RoundRobin())
    const cookie = sticky.valueFor(backends[2]!)
    for (let i = 0; i < 20; i++) assert.equal(sticky.pick(backends, { cookie }), backends[2])
  })

  test("re-picks with the fallback when the pinned backend is unavailable or already tried", () => {
    const backends = makeBackends([1, 1, 1])
    const sticky = new StickyCookie(new RoundRobin())
    const cookie = sticky.valueFor(backends[0]!)
    backends[0]!.state = "down"
    assert.notEqual(sticky.pick(backends, { cookie }), backends[0])
    backends[0]!.state = "up"
    assert.notEqual(sticky.pick(backends, { cookie, exclude: new Set([backends[0]!]) }), backends[0])
    assert.equal(sticky.pick(backends, { cookie }), backends[0])
  })

  test("an unknown or empty cookie falls back", () => {
    const backends = makeBackends([1, 1])
    const sticky = new StickyCookie(new RoundRobin())
    assert.equal(sticky.pick(backends, { cookie: "0123456789abcdef" }), backends[0])
    assert.equal(sticky.pick(backends, { cookie: "" }), backends[1])
  })

  test("a pin to a backup holds only while no primary is available", () => {
    const backends = makeBackends([1, { backup: true }])
    const sticky = new StickyCookie(new RoundRobin())
    const cookie = sticky.valueFor(backends[1]!)
    backends[0]!.state = "down"
    assert.equal(sticky.pick(backends, { cookie }), backends[1])
    backends[0]!.state = "up"
    assert.equal(sticky.pick(backends, { cookie }), backends[0])
  })

  test("cookieFor names the cookie and an opaque value that does not reveal the address", () => {
    const [backend] = makeBackends([1])
    const sticky = new StickyCookie(new RoundRobin(), "route")
    const header = sticky.cookieFor(backend!)
    assert.match(header, /^route=[0-9a-f]{16}; Path=\/; HttpOnly; Secure; SameSite=Lax$/)
    assert.ok(!header.includes("127.0.0.1"))
    assert.equal(header.slice(6, 22), stickyValue(backend!))
  })

  test("values are distinct per backend and stable across Backend objects with the same address", () => {
    const a = makeBackends([1, 1, 1, 1, 1, 1])
    const b = makeBackends([1, 1, 1, 1, 1, 1])
    assert.equal(new Set(a.map(stickyValue)).size, 6)
    assert.deepEqual(a.map(stickyValue), b.map(stickyValue))
  })
})
