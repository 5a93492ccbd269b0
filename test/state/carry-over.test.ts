/**
 * What outlives a generation, seen from outside (issue 9): counts in GET /status before `POST /reload` are still
 * there after it and keep counting; the per-client gate tables keep a client's spent tokens, with the new limits.
 */
import assert from "node:assert/strict"
import net from "node:net"
import { after, before, describe, test } from "node:test"
import { AdminApi } from "../../src/admin/api.ts"
import { silentLogger } from "../../src/core/log.ts"
import { startEchoBackend, type TestBackend } from "../helpers/backends.ts"
import { request } from "../helpers/clients.ts"
import { createPki, type Pki } from "../helpers/pki.ts"
import { type RunningPortcullis, startPortcullis } from "../helpers/portcullis.ts"
import { waitUntil } from "../helpers/wait.ts"

let pki: Pki
let echo: TestBackend
let pc: RunningPortcullis
let admin: AdminApi
let yaml: string
let cert: string

// Port 0 on distinct loopback addresses: each listener's socket is kept by its address across reloads, and the
// bound port is read back from the runtime.
const HOSTS = { web: "127.0.0.2", small: "127.0.0.3", gated: "127.0.0.4", relimited: "127.0.0.5", dead: "127.0.0.6" }

function config(relimitedBurst: number): string {
  return `
listeners:
  - name: web
    address: "${HOSTS.web}:0"
    tls: { ${cert} }
    limits: { rate: { per_second: 0.001, burst: 2 } }
    upstream: echo
  - name: small
    address: "${HOSTS.small}:0"
    tls: { ${cert} }
    limits: { max_connections: 1 }
    upstream: echo
  - name: gated
    address: "${HOSTS.gated}:0"
    tls: { ${cert} }
    limits: { rate: { per_second: 0.001, burst: 2 } }
    upstream: echo
  - name: relimited
    address: "${HOSTS.relimited}:0"
    tls: { ${cert} }
    limits: { rate: { per_second: 0.001, burst: ${relimitedBurst} } }
    upstream: echo
  - name: dead
    address: "${HOSTS.dead}:0"
    tls: { ${cert} }
    upstream: dead
upstreams:
  echo: { backends: ["127.0.0.1:${echo.port}"], health: { path: /, interval: 1m } }
  # Port 1 on loopback: nothing listens, so a request there fails and passive health keeps a record.
  dead: { backends: ["127.0.0.1:1"], retries: 0 }
`
}

before(async () => {
  pki = await createPki()
  echo = await startEchoBackend("echo")
  const site = await pki.issue({ names: ["localhost"] })
  cert = `certificates: [{ cert: ${site.certPath}, key: ${site.keyPath} }]`
  yaml = config(2)
  pc = await startPortcullis(yaml)
  admin = new AdminApi(
    { host: "127.0.0.1", port: 0 },
    { status: () => pc.runtime.status(), reload: () => pc.reload(yaml), drain: () => {} },
    silentLogger(),
  )
  await admin.start()
})

after(async () => {
  await admin?.close()
  await pc?.close()
  await echo?.close()
  await pki?.close()
})

type Name = keyof typeof HOSTS

interface Status {
  generation: number
  listeners: { name: string; connections: number; accepted: number; handshakes: number; handshake_errors: number }[]
  clients: Record<string, { refused_requests: number; refused_connections: number }>
  sockets: Record<string, { connections: number; refused: number }>
}

async function getStatus(): Promise<Status> {
  const res = await fetch(`http://127.0.0.1:${admin.port}/status`)
  assert.equal(res.status, 200)
  return (await res.json()) as Status
}

async function postReload(): Promise<void> {
  const res = await fetch(`http://127.0.0.1:${admin.port}/reload`, { method: "POST" })
  assert.equal(res.status, 200, await res.text())
}

const key = (name: Name) => `${HOSTS[name]}:0`
const listenerOf = (s: Status, name: Name) => s.listeners.find((l) => l.name === name)!

async function get(name: Name): Promise<number> {
  const reply = await request({ port: pc.port(name), ca: pki.ca.cert, tlsOptions: { host: HOSTS[name] } })
  return reply.status
}

/** failHandshake sends bytes that are not a ClientHello: a failed handshake on the listener. */
function failHandshake(name: Name): Promise<void> {
  return new Promise((resolve) => {
    const s = net.connect(pc.port(name), HOSTS[name], () => s.write("GET / HTTP/1.1\r\n\r\n"))
    s.on("error", () => {})
    s.on("close", () => resolve())
  })
}

describe("counters in GET /status carry across POST /reload", () => {
  test("handshakes, failed handshakes, rate refusals and max_connections refusals are still counted, and count on", async () => {
    assert.deepEqual([await get("web"), await get("web"), await get("web")], [200, 200, 429])
    await failHandshake("web")
    // One connection holds the small listener's only place; the next is closed at accept.
    const held = net.connect(pc.port("small"), HOSTS.small)
    held.on("error", () => {})
    try {
      await new Promise((r) => held.once("connect", r))
      await waitUntil(() => pc.runtime.status().sockets[key("small")]?.connections === 1, "one connection held")
      const extra = net.connect(pc.port("small"), HOSTS.small)
      extra.on("error", () => {})
      await new Promise((r) => extra.once("close", r))
    } finally {
      held.destroy()
    }
    await waitUntil(() => listenerOf(pc.runtime.status() as Status, "web").handshake_errors === 1, "error counted")

    const before = await getStatus()
    const web = listenerOf(before, "web")
    assert.equal(web.handshakes, 3)
    assert.equal(web.handshake_errors, 1)
    assert.equal(before.clients[key("web")]?.refused_requests, 1)
    assert.equal(before.sockets[key("small")]?.refused, 1)

    await postReload()
    const afterReload = await getStatus()
    assert.equal(afterReload.generation, before.generation + 1)
    assert.deepEqual(listenerOf(afterReload, "web"), {
      ...web,
      connections: listenerOf(afterReload, "web").connections,
    })
    assert.equal(afterReload.clients[key("web")]?.refused_requests, 1)
    assert.equal(afterReload.sockets[key("small")]?.refused, 1)

    // The new generation counts on from there (the same client's bucket is still empty: another refusal).
    assert.equal(await get("web"), 429)
    const later = await getStatus()
    assert.equal(listenerOf(later, "web").handshakes, 4)
    assert.equal(later.clients[key("web")]?.refused_requests, 2)
  })
})

describe("the per-client gate tables are kept by listener address across a reload", () => {
  test("a client that spent its burst before the reload is still refused after it", async () => {
    assert.deepEqual([await get("gated"), await get("gated")], [200, 200])
    await postReload()
    assert.equal(await get("gated"), 429)
  })

  test("the new generation's limits apply to the kept table", async () => {
    assert.deepEqual([await get("relimited"), await get("relimited"), await get("relimited")], [200, 200, 429])
    yaml = config(4)
    try {
      await postReload()
      // A new rate means a new bucket, full at the new burst: four more requests, then refused.
      const statuses = []
      for (let i = 0; i < 5; i++) statuses.push(await get("relimited"))
      assert.deepEqual(statuses, [200, 200, 200, 200, 429])
    } finally {
      yaml = config(2)
    }
  })
})

describe("GET /status names", () => {
  test("every field name is snake_case (keys that are data, such as addresses and listener names, aside)", async () => {
    assert.equal(await get("dead"), 502)
    const status = (await getStatus()) as unknown as Record<string, unknown>
    const bad: string[] = []
    const walk = (value: unknown, path: string, dataKeys: boolean): void => {
      if (Array.isArray(value)) {
        for (let i = 0; i < value.length; i++) walk(value[i], `${path}[${i}]`, false)
        return
      }
      if (value === null || typeof value !== "object") return
      for (const [k, v] of Object.entries(value)) {
        if (!dataKeys && !/^[a-z][a-z0-9_]*$/.test(k)) bad.push(`${path}.${k}`)
        // clients, sockets and ports are maps by address or listener name.
        walk(v, `${path}.${k}`, path === "" && ["clients", "sockets", "ports"].includes(k))
      }
    }
    walk(status, "", false)
    const upstreams = status["upstreams"] as { health?: unknown[]; passive?: unknown[] }[]
    assert.ok(upstreams[0]?.health?.length, "health entries are there to check")
    assert.ok(upstreams[1]?.passive?.length, "passive entries are there to check")
    assert.deepEqual(bad, [])
  })
})
