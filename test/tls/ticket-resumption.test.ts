/**
 * Session resumption across a reload (issue 9) and across a rotation of the ticket key ring in place (issue 11):
 * TLS 1.2 session tickets and TLS 1.3 PSK tickets issued before `POST /reload` (or runtime.reload), or before the
 * ring rotates (by hand or on the `session_tickets: { rotate, keep }` schedule), resume after it, with Node's tls
 * client and with openssl s_client; a ticket whose key the ring has dropped gets a full handshake;
 * `session_tickets: false` hands over no ticket (TLS 1.3: no NewSessionTicket; TLS 1.2: an empty one).
 */
import assert from "node:assert/strict"
import { execFile } from "node:child_process"
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { after, before, describe, test } from "node:test"
import tls from "node:tls"
import { AdminApi } from "../../src/admin/api.ts"
import { silentLogger } from "../../src/core/log.ts"
import { startEchoBackend, type TestBackend } from "../helpers/backends.ts"
import { createPki, type Pki } from "../helpers/pki.ts"
import { type RunningPortcullis, startPortcullis } from "../helpers/portcullis.ts"
import { waitUntil } from "../helpers/wait.ts"

type Version = "TLSv1.2" | "TLSv1.3"

let pki: Pki
let echo: TestBackend
let pc: RunningPortcullis
let admin: AdminApi
let yaml: string
const dir = mkdtempSync(join(tmpdir(), "pc-resume-"))

before(async () => {
  pki = await createPki()
  echo = await startEchoBackend("echo")
  const site = await pki.issue({ names: ["localhost"] })
  // Port 0: the socket is kept by its configured address across reloads, and the bound port is read back.
  yaml = `
listeners:
  - name: web
    address: "127.0.0.1:0"
    tls: { certificates: [{ cert: ${site.certPath}, key: ${site.keyPath} }] }
    upstream: echo
  - name: other
    address: "127.0.0.2:0"
    tls: { certificates: [{ cert: ${site.certPath}, key: ${site.keyPath} }] }
    upstream: echo
  - name: off
    address: "127.0.0.3:0"
    tls: { certificates: [{ cert: ${site.certPath}, key: ${site.keyPath} }], session_tickets: false }
    upstream: echo
upstreams:
  echo: { backends: ["127.0.0.1:${echo.port}"] }
`
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
  rmSync(dir, { recursive: true, force: true })
})

const HOSTS = { web: "127.0.0.1", other: "127.0.0.2", off: "127.0.0.3" } as const

/**
 * connect makes one TLS connection, sends one request, and returns whether it resumed and the newest session: the
 * last 'session' event, else (TLS 1.2 resumed: a renewed ticket raises no event) getSession() at the end.
 */
function connect(
  version: Version,
  session?: Buffer,
  listener: keyof typeof HOSTS = "web",
  port: number = pc.port(listener),
): Promise<{ reused: boolean; session: Buffer | undefined; tickets: number }> {
  return new Promise((resolve, reject) => {
    let last: Buffer | undefined
    let atEnd: Buffer | undefined
    let tickets = 0
    let reused = false
    const socket = tls.connect({
      host: HOSTS[listener],
      port,
      servername: "localhost",
      ca: readFileSync(pki.ca.certPath),
      minVersion: version,
      maxVersion: version,
      ...(session && { session }),
    })
    const timer = setTimeout(() => socket.destroy(new Error("no answer within 10 s")), 10_000)
    socket.on("session", (s: Buffer) => {
      last = s
      tickets++
    })
    socket.once("end", () => {
      atEnd = socket.getSession()
    })
    socket.once("secureConnect", () => {
      reused = socket.isSessionReused()
      socket.write("GET / HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
    })
    let text = ""
    socket.on("data", (d: Buffer) => {
      text += d.toString()
    })
    socket.once("error", (err) => {
      clearTimeout(timer)
      reject(err)
    })
    socket.once("close", () => {
      clearTimeout(timer)
      if (!text.startsWith("HTTP/1.1 200"))
        reject(new Error(`expected a 200, got ${JSON.stringify(text.slice(0, 40))}`))
      else resolve({ reused, session: last ?? atEnd, tickets })
    })
  })
}

async function reloadByAdmin(): Promise<void> {
  const before = pc.runtime.status().generation
  const res = await fetch(`http://127.0.0.1:${admin.port}/reload`, { method: "POST" })
  assert.equal(res.status, 200, await res.text())
  assert.equal(pc.runtime.status().generation, before + 1, "a new generation serves")
}

/** sClient runs openssl s_client once, saving (-sess_out) or offering (-sess_in) a session; returns its output. */
function sClient(
  version: Version,
  sessionFile: string,
  mode: "save" | "offer",
  port = pc.port("web"),
  extra: string[] = [],
  host = "127.0.0.1",
): Promise<string> {
  const args = [
    "s_client",
    "-connect",
    `${host}:${port}`,
    ...extra,
    "-servername",
    "localhost",
    "-CAfile",
    pki.ca.certPath,
    version === "TLSv1.3" ? "-tls1_3" : "-tls1_2",
    mode === "save" ? "-sess_out" : "-sess_in",
    sessionFile,
    // Wait for the server to close (after its answer): a TLS 1.3 ticket arrives after the handshake.
    "-ign_eof",
  ]
  return new Promise((resolve, reject) => {
    const child = execFile("openssl", args, { timeout: 15_000 }, (err, stdout) => {
      if (err && !stdout) reject(err)
      else resolve(stdout)
    })
    child.stdin!.end("GET / HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
  })
}

for (const version of ["TLSv1.2", "TLSv1.3"] as const) {
  const kind = version === "TLSv1.2" ? "session ticket" : "PSK ticket"
  describe(`${version}: a ${kind} issued before a reload resumes after it`, () => {
    test("with Node's tls client, across POST /reload", async () => {
      const first = await connect(version)
      assert.equal(first.reused, false)
      assert.ok(first.session, "the server sent a ticket")
      // Control: the ticket resumes on the generation that issued it.
      assert.equal((await connect(version, first.session)).reused, true)
      await reloadByAdmin()
      assert.equal((await connect(version, first.session)).reused, true, "resumed on the new generation")
    })

    test("with Node's tls client, across runtime.reload", async () => {
      const first = await connect(version)
      assert.ok(first.session)
      await pc.reload(yaml)
      assert.equal((await connect(version, first.session)).reused, true)
    })

    test("with openssl s_client -sess_out / -sess_in, across POST /reload", async () => {
      const file = join(dir, `${version}.sess`)
      const saved = await sClient(version, file, "save")
      assert.match(saved, /^New, /m, saved)
      assert.match(saved, /HTTP\/1\.1 200/)
      // Control: the saved session resumes on the generation that issued it.
      assert.match(await sClient(version, file, "offer"), new RegExp(`^Reused, ${version}`, "m"))
      await reloadByAdmin()
      const resumed = await sClient(version, file, "offer")
      assert.match(resumed, new RegExp(`^Reused, ${version}`, "m"), resumed)
      assert.match(resumed, /HTTP\/1\.1 200/)
    })
  })
}

describe("a ticket whose key the ring has dropped gets a full handshake", () => {
  for (const version of ["TLSv1.2", "TLSv1.3"] as const) {
    test(`${version}: rotate past keep, reload, and the old ticket is refused (the connection still serves)`, async () => {
      const first = await connect(version)
      assert.ok(first.session)
      const ring = pc.runtime.state.ticketKeys
      const issuedUnder = ring.current().name
      // The default ring keeps 2 previous keys: three rotations drop the key the ticket was sealed with.
      for (let i = 0; i < 3; i++) ring.rotate()
      assert.ok(!ring.keys().some((k) => k.name === issuedUnder), "the ring no longer holds the key")
      await pc.reload(yaml)
      const again = await connect(version, first.session)
      assert.equal(again.reused, false, "a full handshake, not a resumption")
      assert.ok(again.session, "the full handshake issues a new ticket")
      // The new ticket is sealed with the ring's current key: it resumes.
      assert.equal((await connect(version, again.session)).reused, true)
    })
  }
})

describe("tickets stay with the listener that issued them (as when each listener drew its own key)", () => {
  for (const version of ["TLSv1.2", "TLSv1.3"] as const) {
    test(`${version}: a ticket from one listener gets a full handshake on another with the same certificate`, async () => {
      const first = await connect(version)
      assert.ok(first.session)
      assert.equal((await connect(version, first.session, "other")).reused, false)
      // Control: it does resume where it was issued.
      assert.equal((await connect(version, first.session)).reused, true)
    })
  }
})

describe("a ticket issued before the ring rotates resumes after it, with no reload", () => {
  for (const version of ["TLSv1.2", "TLSv1.3"] as const) {
    test(`${version}: Node's tls client, the contexts that issued it (the generation stays)`, async () => {
      const generation = pc.runtime.status().generation
      const first = await connect(version)
      assert.ok(first.session)
      pc.runtime.state.ticketKeys.rotate()
      assert.equal((await connect(version, first.session)).reused, true, "resumed across the rotation")
      assert.equal(pc.runtime.status().generation, generation, "no reload was made for the rotation")
    })

    test(`${version}: openssl s_client -sess_out, rotate, -sess_in`, async () => {
      const file = join(dir, `${version}-rotate.sess`)
      assert.match(await sClient(version, file, "save"), /^New, /m)
      pc.runtime.state.ticketKeys.rotate()
      const resumed = await sClient(version, file, "offer")
      assert.match(resumed, new RegExp(`^Reused, ${version}`, "m"), resumed)
      assert.match(resumed, /HTTP\/1\.1 200/)
    })

    test(`${version}: rotate past keep (no reload) and the old ticket gets a full handshake`, async () => {
      const first = await connect(version)
      for (let i = 0; i < 3; i++) pc.runtime.state.ticketKeys.rotate()
      const again = await connect(version, first.session)
      assert.equal(again.reused, false)
      assert.equal((await connect(version, again.session)).reused, true)
    })

    test(`${version}: a client resuming continuously across 6 rotations makes no full handshake after its first`, async () => {
      let { session } = await connect(version)
      let full = 0
      let resumed = 0
      for (let i = 0; i < 30; i++) {
        if (i % 5 === 4) pc.runtime.state.ticketKeys.rotate()
        const c = await connect(version, session)
        if (c.reused) resumed++
        else full++
        session = c.session ?? session
      }
      assert.deepEqual({ full, resumed }, { full: 0, resumed: 30 })
    })
  }
})

test("TLSv1.3: s_client -sess_in -msg: a resumed handshake gets a NewSessionTicket, which resumes in turn", async () => {
  const [one, two] = [join(dir, "chain-1.sess"), join(dir, "chain-2.sess")]
  assert.match(await sClient("TLSv1.3", one, "save"), /^New, /m)
  const resumed = await sClient("TLSv1.3", one, "offer", pc.port("web"), ["-msg", "-sess_out", two])
  assert.match(resumed, /^Reused, TLSv1\.3/m)
  assert.match(resumed, /<<< TLS 1\.3, Handshake \[length [0-9a-f]+\], NewSessionTicket/, "a ticket after resumption")
  assert.match(await sClient("TLSv1.3", two, "offer"), /^Reused, TLSv1\.3/m, "the new ticket resumes")
})

// session_tickets: false seals no ticket (ticket-callback.ts NoTickets): TLS 1.3 gets no NewSessionTicket at all;
// TLS 1.2 gets the zero-length one RFC 5077 §3.3 sends when a server decides against a ticket, with no session id
// in the ServerHello. Portcullis keeps no session cache, so every handshake is a full one.
describe("session_tickets: false", () => {
  test("TLSv1.3: no NewSessionTicket (s_client -msg, Node's 'session' event), so there is nothing to resume", async () => {
    const file = join(dir, "TLSv1.3-off.sess")
    const saved = await sClient("TLSv1.3", file, "save", pc.port("off"), ["-msg"], HOSTS.off)
    assert.match(saved, /HTTP\/1\.1 200/)
    assert.doesNotMatch(saved, /NewSessionTicket/)
    // s_client saves a TLS 1.3 session only when a ticket comes.
    assert.equal(existsSync(file), false, "s_client had no session to save")
    const off = await connect("TLSv1.3", undefined, "off")
    assert.equal(off.tickets, 0, "no 'session' event")
    // Control: the listener with tickets sends them (OpenSSL's default: two after a full handshake).
    const on = await sClient("TLSv1.3", join(dir, "TLSv1.3-on.sess"), "save", pc.port("web"), ["-msg"])
    assert.match(on, /<<< TLS 1\.3, Handshake \[length [0-9a-f]+\], NewSessionTicket/)
    assert.equal((await connect("TLSv1.3")).tickets, 2)
  })

  test("TLSv1.2: an empty NewSessionTicket (RFC 5077 §3.3), no session id, and a session offered gets a full handshake", async () => {
    const file = join(dir, "TLSv1.2-off.sess")
    const saved = await sClient("TLSv1.2", file, "save", pc.port("off"), ["-msg"], HOSTS.off)
    assert.match(saved, /HTTP\/1\.1 200/)
    // lifetime hint 0, ticket length 0: the whole body of the message.
    const tickets = [...saved.matchAll(/NewSessionTicket\n\s+((?:[0-9a-f]{2} ?)+)\n/g)].map((m) => m[1]!.trim())
    assert.deepEqual(tickets, ["04 00 00 06 00 00 00 00 00 00"], saved)
    assert.match(saved, /^\s*Session-ID: *$/m, "no session id to resume by")
    // Control: the listener with tickets sends a real one.
    const on = await sClient("TLSv1.2", join(dir, "TLSv1.2-on.sess"), "save", pc.port("web"), ["-msg"])
    assert.match(on, /<<< TLS 1\.2, Handshake \[length (?!000a)[0-9a-f]+\], NewSessionTicket/)
    // Neither a ticket nor a session id: s_client has no resumable session to save.
    assert.equal(existsSync(file), false, "s_client had no session to save")
    // A client without tickets (s_client -no_ticket) gets a session id, which resumes nothing: no session cache.
    const byId = join(dir, "TLSv1.2-off-id.sess")
    const idSaved = await sClient("TLSv1.2", byId, "save", pc.port("off"), ["-no_ticket", "-msg"], HOSTS.off)
    assert.doesNotMatch(idSaved, /NewSessionTicket/)
    assert.match(idSaved, /^\s*Session-ID: [0-9A-F]{64}$/m)
    const idOffered = await sClient("TLSv1.2", byId, "offer", pc.port("off"), ["-no_ticket"], HOSTS.off)
    assert.match(idOffered, /^New, /m, "session-id resumption: a full handshake")
    // Node's client keeps its session all the same (getSession()); offered, it gets a full handshake.
    const first = await connect("TLSv1.2", undefined, "off")
    assert.ok(first.session, "Node's client has a session to offer")
    assert.equal((await connect("TLSv1.2", first.session, "off")).reused, false)
    // Control: on the listener with tickets the same steps resume.
    const withTicket = await connect("TLSv1.2")
    assert.equal((await connect("TLSv1.2", withTicket.session)).reused, true)
  })
})

describe("session_tickets: { rotate, keep }: the ring rotates on its own, and tickets outlive the rotation", () => {
  let scheduled: RunningPortcullis
  before(async () => {
    const site = await pki.issue({ names: ["localhost"] })
    scheduled = await startPortcullis(`
listeners:
  - name: web
    address: "127.0.0.1:0"
    tls:
      certificates: [{ cert: ${site.certPath}, key: ${site.keyPath} }]
      session_tickets: { rotate: 3s, keep: 3 }
    upstream: echo
upstreams:
  echo: { backends: ["127.0.0.1:${echo.port}"] }
`)
  })
  after(() => scheduled?.close())

  for (const version of ["TLSv1.2", "TLSv1.3"] as const) {
    test(`${version}: the lifetime hint is keep × rotate (9 s), and a ticket resumes after a scheduled rotation`, async () => {
      const hint = await sClient(version, join(dir, `${version}-hint.sess`), "save", scheduled.port("web"))
      assert.match(hint, /TLS session ticket lifetime hint: 9 \(seconds\)/)
      const ring = scheduled.runtime.state.ticketKeys
      const generation = scheduled.runtime.status().generation
      const first = await connect(version, undefined, "web", scheduled.port("web"))
      const before = ring.current().name
      await waitUntil(() => ring.current().name !== before, "the ring rotated on its schedule", 8000)
      assert.equal((await connect(version, first.session, "web", scheduled.port("web"))).reused, true)
      assert.equal(scheduled.runtime.status().generation, generation, "no reload")
    })
  }
})
