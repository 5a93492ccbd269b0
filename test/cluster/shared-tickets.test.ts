/**
 * Shared session tickets (issue 12, item 4): two instances on one redis-server hold the same ticket key, so a TLS 1.2
 * session ticket or a TLS 1.3 PSK ticket issued by instance A resumes on instance B; without the store it does not.
 * A rotation on one instance reaches the other, and B's status lists both instances.
 */
import assert from "node:assert/strict"
import { readFileSync } from "node:fs"
import { after, before, describe, test } from "node:test"
import { startEchoBackend, type TestBackend } from "../helpers/backends.ts"
import { createPki, type Pki } from "../helpers/pki.ts"
import { type ExternalServer, startRedis } from "../helpers/servers.ts"
import { waitUntil } from "../helpers/wait.ts"
import { connect, currentKey, type Instance, startInstance, waitSameKey } from "./harness.ts"

let pki: Pki
let ca: Buffer
let echo: TestBackend
let redis: ExternalServer
let yaml: string
const running: Instance[] = []

before(async () => {
  pki = await createPki()
  ca = readFileSync(pki.ca.certPath)
  echo = await startEchoBackend("echo")
  redis = await startRedis()
  const site = await pki.issue({ names: ["localhost"] })
  yaml = `
listeners:
  - name: web
    address: "127.0.0.1:0"
    tls: { certificates: [{ cert: ${site.certPath}, key: ${site.keyPath} }] }
    upstream: echo
upstreams:
  echo: { backends: ["127.0.0.1:${echo.port}"] }
`
})

after(async () => {
  await Promise.allSettled(running.map((i) => i.close()))
  await redis?.close()
  await echo?.close()
  await pki?.close()
})

async function start(shared: boolean): Promise<Instance> {
  const instance = await startInstance(yaml, shared ? `redis://127.0.0.1:${redis.port}` : undefined)
  running.push(instance)
  return instance
}

describe("two instances sharing one redis-server", () => {
  let a: Instance
  let b: Instance
  before(async () => {
    a = await start(true)
    b = await start(true)
  })

  test("start with the same ticket key (the first one's, created with SET NX)", () => {
    assert.equal(currentKey(a), currentKey(b))
  })

  for (const version of ["TLSv1.2", "TLSv1.3"] as const) {
    test(`a ${version} session issued by A resumes on B, and one issued by B on A`, async () => {
      const first = await connect(a.port(), ca, version)
      assert.equal(first.reused, false)
      assert.ok(first.session, "A issued a ticket")
      const onB = await connect(b.port(), ca, version, first.session)
      assert.equal(onB.status, "HTTP/1.1 200")
      assert.equal(onB.reused, true, "B resumed A's session")
      const fromB = await connect(b.port(), ca, version)
      const onA = await connect(a.port(), ca, version, fromB.session)
      assert.equal(onA.reused, true, "A resumed B's session")
    })
  }

  test("a rotation on A reaches B in place: B resumes A's new tickets and still the old key's, with no reload", async () => {
    const before = currentKey(a)
    const generations = [a.runtime.status().generation, b.runtime.status().generation]
    const old = await connect(a.port(), ca, "TLSv1.3")
    a.runtime.state.ticketKeys.rotate()
    assert.notEqual(currentKey(a), before)
    await waitSameKey([a, b])
    const fresh = await connect(a.port(), ca, "TLSv1.3")
    assert.equal((await connect(b.port(), ca, "TLSv1.3", fresh.session)).reused, true)
    // The previous key is still in the fleet's ring: its tickets resume on either instance.
    assert.equal((await connect(b.port(), ca, "TLSv1.3", old.session)).reused, true, "B opens the old key's ticket")
    assert.deepEqual(
      [a.runtime.status().generation, b.runtime.status().generation],
      generations,
      "no generation was rebuilt for the rotation",
    )
  })

  test("GET /status's instances lists both instances", async () => {
    const listed = () => b.fleet!.status().instances
    await waitUntil(
      () => listed().length === 2 && listed().every((i) => i.status === "serving"),
      "B's list holds both, serving",
    )
    assert.deepEqual(new Set(listed().map((i) => i.id)), new Set([a.fleet!.id, b.fleet!.id]))
  })
})

describe("control: two instances without a store", () => {
  for (const version of ["TLSv1.2", "TLSv1.3"] as const) {
    test(`a ${version} session issued by one does not resume on the other`, async () => {
      const a = await start(false)
      const b = await start(false)
      const first = await connect(a.port(), ca, version)
      assert.ok(first.session)
      assert.equal((await connect(a.port(), ca, version, first.session)).reused, true, "resumes where it was issued")
      assert.equal((await connect(b.port(), ca, version, first.session)).reused, false)
    })
  }
})

describe("session_tickets: { rotate, keep } with a fleet store: one instance rotates for the fleet", () => {
  let store: ExternalServer
  let a: Instance
  let b: Instance
  before(async () => {
    store = await startRedis()
    const scheduled = yaml.replace(
      "tls: { certificates: [",
      "tls: { session_tickets: { rotate: 2s, keep: 8 }, certificates: [",
    )
    assert.notEqual(scheduled, yaml)
    a = await startInstance(scheduled, `redis://127.0.0.1:${store.port}`)
    b = await startInstance(scheduled, `redis://127.0.0.1:${store.port}`)
  })
  after(async () => {
    await Promise.allSettled([a?.close(), b?.close()])
    await store?.close()
  })

  test("every key either instance made current is the fleet's (no instance rotates on its own), and tickets resume across", async () => {
    await waitSameKey([a, b])
    const seen = { a: new Set([currentKey(a)]), b: new Set([currentKey(b)]) }
    const offA = a.runtime.state.ticketKeys.onChange((ring) => seen.a.add(ring.current().name))
    const offB = b.runtime.state.ticketKeys.onChange((ring) => seen.b.add(ring.current().name))
    try {
      const old = await connect(a.port(), ca, "TLSv1.3")
      const start = currentKey(a)
      await waitUntil(() => seen.a.size >= 3 && seen.b.size >= 3, "two scheduled rotations seen by both", 12_000)
      await waitSameKey([a, b])
      // A rotation made by an instance on its own loses the race to write the ring: its key is in neither ring.
      // (An instance may skip seeing a key as current when two rotations land between its reads, so the rings'
      // contents are compared, not what each saw as current; keep 8 holds every key made during the test.)
      const held = (i: Instance) => new Set(i.runtime.state.ticketKeys.keys().map((k) => k.name))
      for (const name of new Set([...seen.a, ...seen.b])) {
        assert.ok(held(a).has(name) && held(b).has(name), `key ${name} is in both instances' ring`)
      }
      assert.notEqual(currentKey(a), start)
      // The ticket of two rotations ago is in the fleet's ring and its lifetime (16 s): it resumes on B.
      assert.equal((await connect(b.port(), ca, "TLSv1.3", old.session)).reused, true)
    } finally {
      offA()
      offB()
    }
  })
})
