/**
 * Tickets sealed and opened from the ring through Node's internal ticket-key callback (src/tls/ticket-callback.ts),
 * served by the production TlsListener: this file guards the internal (Node 24.21; it exists only for Node's own
 * test-https-resume-after-renew.js) and every answer the callback gives. A malformed answer CHECK-aborts Node and
 * an exception escaping the callback exits it, so each test also proves the process is still serving.
 */
import assert from "node:assert/strict"
import { after, before, describe, test } from "node:test"
import tls from "node:tls"
import { MemoryTicketKeyRing, type TicketKey, type TicketKeyRing } from "../../src/state/ticket-keys.ts"
import { CertStore } from "../../src/tls/cert-store.ts"
import { FileSource } from "../../src/tls/sources/file.ts"
import { type CertFiles, createPki, type Pki } from "../helpers/pki.ts"
import { startStoreServer, tlsConfig } from "./harness.ts"

type Version = "TLSv1.2" | "TLSv1.3"

let pki: Pki
let site: CertFiles

before(async () => {
  pki = await createPki()
  site = await pki.issue({ names: ["localhost"] })
})
after(() => pki?.close())

/** FailingRing is a real ring whose current() or keys() throws while told to: a fault inside the callback. */
class FailingRing implements TicketKeyRing {
  readonly inner = new MemoryTicketKeyRing()
  failCurrent = false
  failKeys = false
  current(): TicketKey {
    if (this.failCurrent) throw new Error("current() failed")
    return this.inner.current()
  }
  keys(): readonly TicketKey[] {
    if (this.failKeys) throw new Error("keys() failed")
    return this.inner.keys()
  }
  rotate(): TicketKey {
    return this.inner.rotate()
  }
  onChange(listener: (ring: TicketKeyRing) => void): () => void {
    return this.inner.onChange(listener)
  }
}

function load(ring: TicketKeyRing, extra: Record<string, unknown> = {}, onTicketError?: (err: unknown) => void) {
  return CertStore.load(tlsConfig({ certificates: [{ cert: site.certPath, key: site.keyPath }], ...extra }), {
    dataDir: pki.dir,
    engine: "http",
    ticketKeys: ring,
    ticketScope: "web",
    onTicketError,
  })
}

interface Visit {
  reused: boolean
  /** every ticket the server handed over (Node's 'session' events) */
  tickets: Buffer[]
  /** the session at the end (TLS 1.2: carries a ticket renewed in a resumed handshake) */
  last: Buffer | undefined
  greeting: string
}

/** visit makes one connection (resuming `session` if given), reads the greeting to the end and collects tickets. */
function visit(port: number, version: Version, session?: Buffer): Promise<Visit> {
  return new Promise((resolve, reject) => {
    const tickets: Buffer[] = []
    let reused = false
    let greeting = ""
    const socket = tls.connect({
      host: "127.0.0.1",
      port,
      servername: "localhost",
      ca: pki.ca.cert,
      minVersion: version,
      maxVersion: version,
      ...(session && { session }),
    })
    const timer = setTimeout(() => socket.destroy(new Error("no answer within 5 s")), 5000)
    socket.on("session", (t: Buffer) => tickets.push(t))
    socket.once("secureConnect", () => {
      reused = socket.isSessionReused()
    })
    socket.on("data", (d: Buffer) => {
      greeting += d.toString()
    })
    socket.once("end", () => {
      // getSession() before close: in TLS 1.2 a ticket renewed in a resumed handshake is only there.
      const last = socket.getSession()
      socket.once("close", () => {
        clearTimeout(timer)
        resolve({ reused, tickets, last, greeting })
      })
    })
    socket.once("error", (err) => {
      clearTimeout(timer)
      reject(err)
    })
  })
}

/** newest is the session to resume with next: the last ticket handed over, else the session at the end. */
function newest(v: Visit): Buffer {
  const s = v.tickets.at(-1) ?? v.last
  assert.ok(s, "the server handed over a session")
  return s
}

test("the Node internal is there: SecureContext#context.enableTicketKeyCallback (Node 24.21; see ticket-callback.ts)", () => {
  const native = (tls.createSecureContext() as unknown as { context: Record<string, unknown> }).context
  assert.equal(
    typeof native.enableTicketKeyCallback,
    "function",
    `Node ${process.version} has no enableTicketKeyCallback: session tickets need another design`,
  )
})

for (const version of ["TLSv1.2", "TLSv1.3"] as const) {
  describe(`${version}: one store, its ring rotated in place`, () => {
    test("a ticket of the previous key resumes after a rotation, on the same contexts", async (t) => {
      const ring = new MemoryTicketKeyRing({ keep: 2 })
      const port = await startStoreServer(t, await load(ring))
      const first = await visit(port, version)
      assert.equal(first.reused, false)
      ring.rotate()
      const resumed = await visit(port, version, newest(first))
      assert.equal(resumed.reused, true, "resumed with a ticket of the previous key")
      assert.equal(resumed.greeting, "hi\n")
    })

    test("a ticket whose key the ring dropped (keep exceeded) gets a full handshake, and the process serves on", async (t) => {
      const ring = new MemoryTicketKeyRing({ keep: 2 })
      const port = await startStoreServer(t, await load(ring))
      const first = await visit(port, version)
      ring.rotate()
      ring.rotate()
      // Control: still held (two previous keys), it resumes.
      assert.equal((await visit(port, version, newest(first))).reused, true)
      ring.rotate()
      const again = await visit(port, version, newest(first))
      assert.equal(again.reused, false, "a full handshake")
      assert.equal(again.greeting, "hi\n")
      assert.equal((await visit(port, version, newest(again))).reused, true, "the new ticket resumes")
    })

    test("a ticket the ring never held (another ring's) gets a full handshake", async (t) => {
      const port = await startStoreServer(t, await load(new MemoryTicketKeyRing()))
      const stranger = await startStoreServer(t, await load(new MemoryTicketKeyRing()))
      const foreign = await visit(stranger, version)
      const here = await visit(port, version, newest(foreign))
      assert.equal(here.reused, false)
      assert.equal(here.greeting, "hi\n")
      // Control: on the store that issued it, it resumes.
      assert.equal((await visit(stranger, version, newest(foreign))).reused, true)
    })

    test("a previous key past this listener's keep × rotate is refused although the ring still holds it", async (t) => {
      // The ring's clock runs 2 h behind: its rotation happened 2 h ago as the listener (1 h grace) sees it.
      const ring = new MemoryTicketKeyRing({ now: () => Date.now() - 2 * 3_600_000 })
      const strict = await startStoreServer(t, await load(ring, { session_tickets: { rotate: "1h", keep: 1 } }))
      const lenient = await startStoreServer(t, await load(ring, { session_tickets: { rotate: "1h", keep: 3 } }))
      const a = await visit(strict, version)
      const b = await visit(lenient, version)
      ring.rotate()
      assert.equal(ring.keys().length, 2, "the ring holds the previous key")
      assert.equal((await visit(strict, version, newest(a))).reused, false, "1 h grace: refused")
      assert.equal((await visit(lenient, version, newest(b))).reused, true, "3 h grace: resumed")
    })

    test("an exception inside the callback (opening) gives a full handshake and is reported", async (t) => {
      const ring = new FailingRing()
      const errors: unknown[] = []
      const port = await startStoreServer(t, await load(ring, {}, (err) => errors.push(err)))
      const first = await visit(port, version)
      // A ticket of the current key is opened with current() alone.
      ring.failCurrent = true
      const failed = await visit(port, version, newest(first))
      assert.equal(failed.reused, false)
      assert.equal(failed.greeting, "hi\n")
      assert.match(String(errors[0]), /current\(\) failed/)
      ring.failCurrent = false
      assert.equal((await visit(port, version, newest(first))).reused, true, "the ticket resumes again")
      // A ticket of a previous key is looked for in keys().
      ring.rotate()
      ring.failKeys = true
      const older = await visit(port, version, newest(first))
      assert.equal(older.reused, false)
      assert.equal(older.greeting, "hi\n")
      assert.match(String(errors.at(-1)), /keys\(\) failed/)
      ring.failKeys = false
      assert.equal((await visit(port, version, newest(first))).reused, true, "the previous key's ticket resumes")
    })

    test("an exception inside the callback (sealing) gives a handshake without a ticket", async (t) => {
      const ring = new FailingRing()
      const errors: unknown[] = []
      const port = await startStoreServer(t, await load(ring, {}, (err) => errors.push(err)))
      ring.failCurrent = true
      const sealed = await visit(port, version)
      assert.equal(sealed.greeting, "hi\n")
      assert.ok(errors.length >= 1, "reported")
      assert.match(String(errors[0]), /current\(\) failed/)
      if (version === "TLSv1.3") assert.equal(sealed.tickets.length, 0, "OpenSSL sends no TLS 1.3 ticket")
      ring.failCurrent = false
      const good = await visit(port, version)
      assert.equal((await visit(port, version, newest(good))).reused, true)
    })
  })
}

test("TLSv1.3: every resumed handshake hands over a new ticket, and each one resumes once more (5 in a row)", async (t) => {
  const ring = new MemoryTicketKeyRing()
  const port = await startStoreServer(t, await load(ring))
  let session = newest(await visit(port, "TLSv1.3"))
  for (let i = 0; i < 5; i++) {
    const v = await visit(port, "TLSv1.3", session)
    assert.equal(v.reused, true, `resumption ${i}`)
    assert.equal(v.tickets.length, 1, `one new ticket after resumption ${i}`)
    session = v.tickets[0]!
  }
})

test("TLSv1.2: a resumption with a previous key's ticket renews it under the current key", async (t) => {
  const ring = new MemoryTicketKeyRing({ keep: 1 })
  const port = await startStoreServer(t, await load(ring))
  const first = await visit(port, "TLSv1.2")
  ring.rotate()
  const resumed = await visit(port, "TLSv1.2", newest(first))
  assert.equal(resumed.reused, true)
  // The renewed ticket is sealed under the current key: it outlives the one it replaced.
  ring.rotate()
  assert.equal((await visit(port, "TLSv1.2", newest(first))).reused, false, "the first key is gone")
  assert.equal((await visit(port, "TLSv1.2", resumed.last)).reused, true, "the renewed ticket resumes")
})

for (const version of ["TLSv1.2", "TLSv1.3"] as const) {
  test(`${version}: a ticket resumes on the contexts a renewal swapped in (replace), and after a rotation on top`, async (t) => {
    const ring = new MemoryTicketKeyRing()
    const store = await load(ring)
    const port = await startStoreServer(t, store)
    const first = await visit(port, version)
    const renewed = await pki.issue({ names: ["localhost"] })
    store.replace(0, await new FileSource(renewed.certPath, renewed.keyPath).load())
    assert.equal(store.certificates()[0]!.chainPem, renewed.cert, "the renewed certificate serves")
    const resumed = await visit(port, version, newest(first))
    assert.equal(resumed.reused, true, "resumed on the new context")
    ring.rotate()
    assert.equal((await visit(port, version, newest(first))).reused, true, "and after a rotation")
  })
}
