/**
 * Fleet-wide per-client rate limits (issue 12, item 4, `limits.rate.scope: fleet`): a client alternating between two
 * instances gets about the rate once, not once per instance. Tolerance: what passes over T seconds is within
 * [0.75, 1.5] × (per_second × T + burst) — the approximation in src/cluster/shared/fleet-rate.ts lets through up to
 * one more burst per instance and what the other instance accepted in its last window (100 ms here) before the
 * counts meet. Control: with scope local, the same client gets about twice that.
 */
import assert from "node:assert/strict"
import { readFileSync } from "node:fs"
import https from "node:https"
import { after, before, test } from "node:test"
import { startEchoBackend, type TestBackend } from "../helpers/backends.ts"
import { request } from "../helpers/clients.ts"
import { createPki, type Pki } from "../helpers/pki.ts"
import { type ExternalServer, startRedis } from "../helpers/servers.ts"
import { type Instance, startInstance } from "./harness.ts"

const PER_SECOND = 5
const BURST = 5
const RUN_MS = 3000

let pki: Pki
let ca: Buffer
let echo: TestBackend
let redis: ExternalServer
let cert: string
const running: Instance[] = []

before(async () => {
  pki = await createPki()
  ca = readFileSync(pki.ca.certPath)
  echo = await startEchoBackend("echo")
  redis = await startRedis()
  const site = await pki.issue({ names: ["localhost"] })
  cert = `certificates: [{ cert: ${site.certPath}, key: ${site.keyPath} }]`
})

after(async () => {
  await Promise.allSettled(running.map((i) => i.close()))
  await redis?.close()
  await echo?.close()
  await pki?.close()
})

function yaml(scope: "local" | "fleet"): string {
  return `
listeners:
  - name: web
    address: "127.0.0.1:0"
    tls: { ${cert} }
    limits: { rate: { per_second: ${PER_SECOND}, burst: ${BURST}, scope: ${scope} } }
    upstream: echo
upstreams:
  echo: { backends: ["127.0.0.1:${echo.port}"] }
${scope === "fleet" ? `cluster: { store: { redis: "redis://127.0.0.1:${redis.port}" } }` : ""}
`
}

/** hammer alternates requests between the instances (keep-alive, one connection each) for RUN_MS. */
async function hammer(
  instances: Instance[],
): Promise<{ ok: number; limited: number; other: number; expected: number }> {
  const agents = instances.map(() => new https.Agent({ keepAlive: true, maxSockets: 1 }))
  let ok = 0
  let limited = 0
  let other = 0
  const started = Date.now()
  try {
    for (let i = 0; Date.now() - started < RUN_MS; i++) {
      const n = i % instances.length
      const reply = await request({ port: instances[n]!.port(), ca, agent: agents[n]! })
      if (reply.status === 200) ok++
      else if (reply.status === 429) limited++
      else other++
    }
  } finally {
    for (const agent of agents) agent.destroy()
  }
  const seconds = (Date.now() - started) / 1000
  return { ok, limited, other, expected: PER_SECOND * seconds + BURST }
}

test("scope fleet: a client over its rate across two instances gets the rate once (±tolerance)", async (t) => {
  const a = await startInstance(yaml("fleet"), `redis://127.0.0.1:${redis.port}`)
  const b = await startInstance(yaml("fleet"), `redis://127.0.0.1:${redis.port}`)
  running.push(a, b)
  const r = await hammer([a, b])
  const detail = JSON.stringify(r)
  t.diagnostic(detail)
  assert.equal(r.other, 0, detail)
  assert.ok(r.limited > r.ok, `the client went well over its rate: ${detail}`)
  assert.ok(r.ok <= 1.5 * r.expected, `at most 1.5 × the rate passed: ${detail}`)
  assert.ok(r.ok >= 0.75 * r.expected, `at least 0.75 × the rate passed: ${detail}`)
})

test("control, scope local: the same client gets the rate on each instance", async (t) => {
  const a = await startInstance(yaml("local"))
  const b = await startInstance(yaml("local"))
  running.push(a, b)
  const r = await hammer([a, b])
  t.diagnostic(JSON.stringify(r))
  assert.ok(r.ok >= 1.7 * r.expected, `about twice the rate passed: ${JSON.stringify(r)}`)
})
