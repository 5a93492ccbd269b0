/** Balancing through the proxy: sticky cookie, hash keys, backup backends, and draining through the admin API. */
import assert from "node:assert/strict"
import { after, before, describe, test } from "node:test"
import type { AdminApi } from "../../src/admin/api.ts"
import { request } from "../helpers/clients.ts"
import { createPki, type Pki } from "../helpers/pki.ts"
import { type RunningPortcullis, startPortcullis } from "../helpers/portcullis.ts"
import { waitUntil } from "../helpers/wait.ts"
import { adminCall, type FlakyBackend, startAdmin, startFlakyBackend, upstreamStatus } from "./harness.ts"

let pki: Pki
let pc: RunningPortcullis
let admin: AdminApi
let port: number
let a: FlakyBackend
let b: FlakyBackend
let c: FlakyBackend

before(async () => {
  pki = await createPki()
  const site = await pki.issue({
    names: ["localhost", "sticky.test", "hash.test", "path.test", "backup.test", "drain.test"],
  })
  a = await startFlakyBackend("a")
  b = await startFlakyBackend("b")
  c = await startFlakyBackend("c")
  const all = `["127.0.0.1:${a.port}", "127.0.0.1:${b.port}", "127.0.0.1:${c.port}"]`
  pc = await startPortcullis(`
listeners:
  - name: web
    address: 127.0.0.1:0
    tls: { certificates: [{ cert: ${site.certPath}, key: ${site.keyPath} }] }
    routes:
      - { hosts: [sticky.test], upstream: sticky }
      - { hosts: [hash.test], upstream: hashed }
      - { hosts: [path.test], upstream: by_path }
      - { hosts: [backup.test], upstream: with_backup }
      - { hosts: [drain.test], upstream: drained }
upstreams:
  sticky: { backends: ${all}, balance: round_robin, sticky: { cookie: srv } }
  hashed: { backends: ${all}, balance: hash, hash_key: "header:X-Tenant" }
  by_path: { backends: ${all}, balance: hash, hash_key: path }
  with_backup:
    backends: ["127.0.0.1:${a.port}", { address: "127.0.0.1:${b.port}", backup: true }]
    passive: { enabled: false }
  drained: { backends: ["127.0.0.1:${a.port}", "127.0.0.1:${b.port}"], balance: round_robin }
access_log: { enabled: false }
`)
  port = pc.port()
  admin = await startAdmin(pc)
})

after(async () => {
  await admin?.close()
  await pc?.close()
  for (const backend of [a, b, c]) await backend?.kill()
  await pki?.close()
})

function get(host: string, options: { path?: string; headers?: Record<string, string> } = {}) {
  return request({ port, host, ca: pki.ca.cert, ...options })
}

describe("sticky cookie", () => {
  test("the first answer sets the cookie; requests carrying it stay on that backend until it goes down", async () => {
    const first = await get("sticky.test")
    assert.equal(first.status, 200)
    const setCookie = String(first.headers["set-cookie"])
    const match = /^srv=([0-9a-f]{16}); Path=\/; HttpOnly; Secure; SameSite=Lax$/.exec(setCookie)
    assert.ok(match, `Set-Cookie: ${setCookie}`)
    const pinned = first.text
    for (let i = 0; i < 6; i++) {
      const reply = await get("sticky.test", { headers: { cookie: `other=1; srv=${match[1]}` } })
      assert.equal(reply.text, pinned, `request ${i} stayed on ${pinned}`)
      assert.equal(reply.headers["set-cookie"], undefined, "a matching cookie is not set again")
    }
    // Without the cookie, round robin spreads.
    const spread = new Set<string>()
    for (let i = 0; i < 3; i++) spread.add((await get("sticky.test")).text)
    assert.equal(spread.size, 3)

    const victim = [a, b, c].find((x) => x.name === pinned)!
    await victim.kill()
    try {
      const moved = await get("sticky.test", { headers: { cookie: `srv=${match[1]}` } })
      assert.equal(moved.status, 200)
      assert.notEqual(moved.text, pinned)
      const repinned = /^srv=([0-9a-f]{16});/.exec(String(moved.headers["set-cookie"]))
      assert.ok(repinned && repinned[1] !== match[1], "the client is pinned to its new backend")
      const again = await get("sticky.test", { headers: { cookie: `srv=${repinned[1]}` } })
      assert.equal(again.text, moved.text)
    } finally {
      await victim.revive()
    }
  })
})

describe("hash keys", () => {
  test("header:X-Tenant sends each tenant to one backend, and the tenants spread", async () => {
    const owners = new Map<string, string>()
    for (let round = 0; round < 3; round++) {
      for (let t = 0; t < 12; t++) {
        const reply = await get("hash.test", { headers: { "x-tenant": `tenant-${t}` } })
        const seen = owners.get(`tenant-${t}`)
        if (seen === undefined) owners.set(`tenant-${t}`, reply.text)
        else assert.equal(reply.text, seen, `tenant-${t} moved`)
      }
    }
    assert.ok(new Set(owners.values()).size >= 2, "12 tenants land on more than one backend")
  })

  test("path hashes the path without the query", async () => {
    const first = await get("path.test", { path: "/assets/app.js?v=1" })
    for (let i = 2; i < 6; i++) {
      assert.equal((await get("path.test", { path: `/assets/app.js?v=${i}` })).text, first.text)
    }
  })
})

describe("backup backends", () => {
  test("a backup serves only while no primary can", async () => {
    for (let i = 0; i < 4; i++) assert.equal((await get("backup.test")).text, "a")
    await a.kill()
    try {
      for (let i = 0; i < 4; i++) assert.equal((await get("backup.test")).text, "b")
    } finally {
      await a.revive()
    }
    assert.equal((await get("backup.test")).text, "a")
  })
})

describe("drain through the admin API", () => {
  test("a draining backend takes no new requests and finishes the one in flight; undrain brings it back", async () => {
    const slow = get("drain.test", { path: "/slow?ms=400" })
    let busy = ""
    await waitUntil(() => {
      busy = upstreamStatus(pc, "drained").backends.find((x) => x.in_flight === 1)?.id ?? ""
      return busy !== ""
    }, "slow request in flight")
    const drained = await adminCall(admin, "POST", `/upstreams/drained/backends/${busy}/drain`)
    assert.equal(drained.status, 200)
    assert.equal(upstreamStatus(pc, "drained").backends.find((x) => x.id === busy)?.state, "draining")
    const busyName = busy.endsWith(`:${a.port}`) ? "a" : "b"
    for (let i = 0; i < 4; i++) assert.notEqual((await get("drain.test")).text, busyName)
    const finished = await slow
    assert.equal(finished.status, 200)
    assert.equal(finished.text, `slow ${busyName}`)

    assert.equal((await adminCall(admin, "POST", `/upstreams/drained/backends/${busy}/undrain`)).status, 200)
    const names = new Set<string>()
    for (let i = 0; i < 4; i++) names.add((await get("drain.test")).text)
    assert.ok(names.has(busyName), "undrained backend serves again")
    assert.equal((await adminCall(admin, "POST", "/upstreams/drained/backends/127.0.0.1:1/drain")).status, 404)
  })

  test("a drain survives a reload", async () => {
    const id = `127.0.0.1:${a.port}`
    await adminCall(admin, "POST", `/upstreams/drained/backends/${id}/drain`)
    const yaml = pc.runtime.generation!.config
    // Reload the very same config text: the new generation must keep the backend draining.
    await pc.runtime.reload(yaml)
    assert.equal(upstreamStatus(pc, "drained").backends.find((x) => x.id === id)?.state, "draining")
    for (let i = 0; i < 4; i++) assert.equal((await get("drain.test")).text, "b")
    await adminCall(admin, "POST", `/upstreams/drained/backends/${id}/undrain`)
  })
})
