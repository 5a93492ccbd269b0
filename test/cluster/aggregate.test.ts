/**
 * The pure merges behind a cluster's admin answers (aggregate.ts, aggregate-dashboard.ts): censuses are added as
 * counts (so a share is the summed count over the summed clients, not an average of shares), passive ejection is
 * any worker's, dashboard totals add up and the recent failures are the newest of all.
 */
import assert from "node:assert/strict"
import { describe, test } from "node:test"
import { type DashboardData, DashboardFeed } from "../../src/admin/dashboard/data.ts"
import { mergeCensus, mergeStatus } from "../../src/cluster/aggregate.ts"
import { mergeDashboard } from "../../src/cluster/aggregate-dashboard.ts"
import type { ListenerCensus } from "../../src/tls/client-census.ts"

function census(partial: Partial<ListenerCensus>): ListenerCensus {
  return {
    clients: 0,
    window: { size: 1000, seen: 0 },
    versions: {},
    groups: {},
    ciphers: {},
    sigalgs: {},
    whatif: {},
    ...partial,
  }
}

describe("mergeCensus", () => {
  test("adds every count; the modern share is 1 in 10 (summed), not the 50% an average of shares would say", () => {
    const a = census({
      clients: 1,
      window: { size: 1000, seen: 1 },
      versions: { "TLSv1.2": 1 },
      groups: { secp256r1: 1 },
      whatif: {
        modern: { refused: 1, reasons: { no_shared_version: 1 } },
        current: { refused: 0, unjudged: ["ciphers"] },
      },
    })
    const b = census({
      clients: 9,
      window: { size: 1000, seen: 12 },
      versions: { "TLSv1.3": 9, "TLSv1.2": 0 },
      groups: { X25519: 9, secp256r1: 2 },
      whatif: {
        modern: { refused: 0 },
        current: { refused: 2, reasons: { no_shared_cipher: 2 }, unjudged: ["ciphers"] },
      },
    })
    const merged = mergeCensus([{ listeners: { web: a } }, { listeners: { web: b, other: a } }])
    const web = merged.listeners["web"]!
    assert.equal(web.clients, 10)
    assert.deepEqual(web.window, { size: 2000, seen: 13 })
    assert.deepEqual(web.versions, { "TLSv1.3": 9, "TLSv1.2": 1 })
    assert.deepEqual(Object.keys(web.groups), ["X25519", "secp256r1"], "most offered first")
    assert.deepEqual(web.groups, { X25519: 9, secp256r1: 3 })
    assert.deepEqual(web.whatif["modern"], { refused: 1, reasons: { no_shared_version: 1 } })
    assert.equal(web.whatif["modern"]!.refused / web.clients, 0.1)
    assert.deepEqual(web.whatif["current"], { refused: 2, unjudged: ["ciphers"], reasons: { no_shared_cipher: 2 } })
    assert.deepEqual(merged.listeners["other"], a, "a listener only one worker has is that worker's")
    assert.equal(a.clients, 1, "the inputs are not changed")
  })
})

describe("mergeStatus", () => {
  test("a backend is ejected when any worker ejected it, until the latest; counts add up", () => {
    const backend = (ejected: boolean, until: number, inFlight: number) => ({
      upstreams: [
        { name: "u", backends: [{ id: "b", ejected, ejected_until: until, in_flight: inFlight, weight: 1 }] },
      ],
    })
    const merged = mergeStatus([backend(false, 0, 2), backend(true, 5000, 3)]) as ReturnType<typeof backend>
    assert.deepEqual(merged.upstreams[0]!.backends[0], {
      id: "b",
      ejected: true,
      ejected_until: 5000,
      in_flight: 5,
      weight: 1,
    })
  })
})

describe("mergeDashboard", () => {
  function snapshot(n: number, failures: string[]): DashboardData {
    return {
      time: 1,
      generation: 7,
      loaded_at: undefined,
      requests: { "2xx": n },
      handshakes: { full: n, resumed: 1 },
      versions: { "TLSv1.3": n },
      ciphers: { TLS_AES_128_GCM_SHA256: n },
      failures: { no_shared_cipher: 1 },
      backend_errors: {},
      latency: { bounds: [0.1], first_byte: { u: { counts: [n, n], sum: n, count: n } }, connect: {} },
      listeners: [{ name: "web", address: "127.0.0.1:0", tls: true, connections: 1, accepted: n }],
      upstreams: [
        {
          name: "u",
          balance: "round_robin",
          queue: { waiting: 1, size: 10 },
          backends: [
            {
              id: "b",
              state: "up",
              backup: false,
              ejected: n > 5,
              in_flight: 1,
              max_connections: null,
              errors: 0,
              responses: n,
              first_byte_seconds: n / 10,
              health: undefined,
            },
          ],
        },
      ],
      certificates: [],
      recent_failures: failures.map((time) => ({ time, listener: "web", reason: "x", sni: null, client: "c" })),
      instances: null,
      census: null,
    } as unknown as DashboardData
  }

  test("sums the totals, keeps the newest ten failures, and takes the port and generation from the primary", () => {
    const times = (from: number) =>
      Array.from({ length: 8 }, (_, i) => `2026-01-01T00:00:${String(from + i).padStart(2, "0")}Z`)
    const merged = mergeDashboard([snapshot(4, times(0)), snapshot(10, times(10))], {
      time: 99,
      generation: 3,
      loaded_at: "then",
      ports: { web: 8443 },
      instances: null,
    })
    assert.equal(merged.time, 99)
    assert.equal(merged.generation, 3)
    assert.deepEqual(merged.requests, { "2xx": 14 })
    assert.deepEqual(merged.handshakes, { full: 14, resumed: 2 })
    assert.deepEqual(merged.failures, { no_shared_cipher: 2 })
    assert.deepEqual(merged.latency.first_byte["u"], { counts: [14, 14], sum: 14, count: 14 })
    assert.deepEqual(merged.listeners, [
      { name: "web", address: "127.0.0.1:8443", tls: true, connections: 2, accepted: 14 },
    ])
    const b = merged.upstreams[0]!.backends[0]!
    assert.deepEqual([b.ejected, b.in_flight, b.responses, b.first_byte_seconds], [true, 2, 14, 1.4])
    assert.equal(merged.upstreams[0]!.queue.waiting, 2)
    assert.equal(merged.recent_failures.length, 10)
    assert.equal(merged.recent_failures[0]!.time, "2026-01-01T00:00:17Z")
    assert.equal(merged.recent_failures[9]!.time, "2026-01-01T00:00:06Z")
  })
})

describe("DashboardFeed with a primary's build (a promise)", () => {
  test("polls in one second share one build; a build that failed is made again by the next poll", async () => {
    let calls = 0
    let fail = true
    const feed = new DashboardFeed(async () => {
      calls++
      if (fail) throw new Error("no worker")
      return { calls }
    }, 1000)
    const first = feed.text(10_000)
    assert.equal(feed.text(10_500), first, "the same promise while it is pending")
    await assert.rejects(first as Promise<string>, /no worker/)
    fail = false
    assert.equal(await feed.text(10_600), '{"calls":2}', "retried at once, not after the second")
    assert.equal(feed.text(10_700), '{"calls":2}', "then served as text for the rest of its second")
    assert.equal(await feed.text(11_600), '{"calls":3}')
    assert.equal(calls, 3)
  })
})
