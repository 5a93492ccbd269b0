/**
 * On-demand TLS against a real Pebble: a name matching on_demand.names gets a certificate at its first handshake
 * once the ask URL answers 2xx; a denied name, a name outside the patterns and a name over the rate get the
 * listener's default certificate and no order.
 */
import assert from "node:assert/strict"
import http from "node:http"
import type net from "node:net"
import { after, before, describe, test } from "node:test"
import { scrape } from "../../../src/admin/metrics-endpoint.ts"
import { parsePrometheus, value } from "../../helpers/prometheus.ts"
import { type Pebble, served, startAcmePortcullis, startPebble, until } from "./harness.ts"

describe("acme on-demand TLS (Pebble)", () => {
  let pebble: Pebble
  let root: string
  const asked: string[] = []
  const held: (() => void)[] = []
  let askPort = 0
  const cleanups: (() => unknown)[] = []
  before(async () => {
    pebble = await startPebble({ after: (fn: () => unknown) => cleanups.push(fn) })
    root = await pebble.root()
    // The operator's ask endpoint: names starting with "yes" are allowed.
    const ask = http.createServer((req, res) => {
      const domain = new URL(req.url ?? "/", "http://x").searchParams.get("domain") ?? ""
      asked.push(domain)
      // "slow" names are answered when the test lets them (to hold requests in flight).
      if (domain.startsWith("slow")) held.push(() => res.writeHead(403).end())
      else res.writeHead(domain.startsWith("yes") ? 200 : 403).end()
    })
    await new Promise<void>((r) => ask.listen(0, "127.0.0.1", r))
    askPort = (ask.address() as net.AddressInfo).port
    cleanups.push(() => ask.close())
  })
  after(async () => {
    for (const fn of cleanups.reverse()) await fn()
  })

  const start = (t: { after(fn: () => unknown): void }, rate = 10) =>
    startAcmePortcullis(
      t,
      pebble,
      `
listeners:
  - name: web
    address: 127.0.0.1:0
    tls: { certificates: [{ acme: [base.od.test] }] }
    upstream: app
  - name: plain
    address: 127.0.0.2:0
    redirect_https: 443
upstreams: { app: { backends: [127.0.0.1:9] } }
ACME_BLOCK
`,
      [
        "challenges: [http-01]",
        `on_demand: { ask: "http://127.0.0.1:${askPort}/ask", names: ["*.od.test"], rate: ${rate}, max_in_flight: 2 }`,
      ],
    )

  test("an allowed name gets its certificate at its first handshake; a denied one the default certificate", async (t) => {
    const pc = await start(t)
    await until(() => pc.log.with("acme certificate issued").length === 1, "the base certificate")
    const orders = pebble.orders()
    const yes = await served(pc.port("web"), "yes1.od.test", root)
    yes.socket.destroy()
    assert.equal(yes.subjectaltname, "DNS:yes1.od.test", "the first handshake already gets the new certificate")
    assert.deepEqual(asked.slice(-1), ["yes1.od.test"])
    assert.equal(pebble.orders(), orders + 1)
    // The second handshake takes it from the store: no ask, no order.
    const again = await served(pc.port("web"), "yes1.od.test", root)
    again.socket.destroy()
    assert.equal(again.serial, yes.serial)
    assert.equal(asked.filter((d) => d === "yes1.od.test").length, 1)

    const denied = await served(pc.port("web"), "no1.od.test", root, { rejectUnauthorized: false })
    denied.socket.destroy()
    assert.equal(denied.subjectaltname, "DNS:base.od.test")
    assert.ok(asked.includes("no1.od.test"))
    const outside = await served(pc.port("web"), "yes.elsewhere.test", root, { rejectUnauthorized: false })
    outside.socket.destroy()
    assert.equal(outside.subjectaltname, "DNS:base.od.test")
    assert.equal(asked.includes("yes.elsewhere.test"), false, "a name outside on_demand.names is never asked about")
    assert.equal(pebble.orders(), orders + 1)
    const metrics = parsePrometheus(scrape(pc.runtime))
    assert.equal(value(metrics, "portcullis_acme_on_demand_total", { result: "issued" }), 1)
    assert.equal(value(metrics, "portcullis_acme_on_demand_total", { result: "denied" }), 1)
  })

  test("beyond max_in_flight a name gets the default certificate at once: nothing is queued", async (t) => {
    const pc = await start(t)
    await until(() => pc.log.with("acme certificate issued").length === 1, "the base certificate")
    const port = pc.port("web")
    // Two names wait on ask (max_in_flight: 2); a third is refused at once while they wait.
    const slow = [
      served(port, "slow1.od.test", root, { rejectUnauthorized: false }),
      served(port, "slow2.od.test", root, { rejectUnauthorized: false }),
    ]
    await until(() => held.length === 2, "two names in flight")
    const started = Date.now()
    const third = await served(port, "yes9.od.test", root, { rejectUnauthorized: false })
    third.socket.destroy()
    assert.equal(third.subjectaltname, "DNS:base.od.test")
    // At once: a queued handshake would wait for the held names (never answered here) until its 10 s timeout.
    assert.ok(Date.now() - started < 5_000)
    assert.equal(asked.includes("yes9.od.test"), false)
    for (const answer of held.splice(0)) answer()
    for (const s of await Promise.all(slow)) {
      s.socket.destroy()
      assert.equal(s.subjectaltname, "DNS:base.od.test")
    }
    const metrics = parsePrometheus(scrape(pc.runtime))
    assert.equal(value(metrics, "portcullis_acme_on_demand_total", { result: "busy" }), 1)
  })

  test("over the rate, an allowed name gets the default certificate and no order", async (t) => {
    const pc = await start(t, 1)
    await until(() => pc.log.with("acme certificate issued").length === 1, "the base certificate")
    const first = await served(pc.port("web"), "yes2.od.test", root)
    first.socket.destroy()
    assert.equal(first.subjectaltname, "DNS:yes2.od.test")
    const orders = pebble.orders()
    const limited = await served(pc.port("web"), "yes3.od.test", root, { rejectUnauthorized: false })
    limited.socket.destroy()
    assert.equal(limited.subjectaltname, "DNS:base.od.test")
    assert.equal(pebble.orders(), orders)
    const metrics = parsePrometheus(scrape(pc.runtime))
    assert.equal(value(metrics, "portcullis_acme_on_demand_total", { result: "rate_limited" }), 1)
  })
})
