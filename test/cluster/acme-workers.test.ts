/**
 * ACME under workers (issue 12): with cluster.workers 2 the primary alone runs the AcmeManager and pushes each
 * certificate and each pending challenge answer to the workers. Against a real Pebble: one order per name, both
 * workers serve the issued certificate (seen through /status's per-worker accept counts), http-01 and tls-alpn-01
 * are answered by whichever worker Pebble's validation reaches (the other one is SIGSTOPped), a renewal reaches
 * both workers in place while a keep-alive connection stays open and sessions resume, and on-demand TLS places one
 * order when both workers see a new name at once.
 */
import assert from "node:assert/strict"
import { X509Certificate } from "node:crypto"
import { mkdtempSync, rmSync, writeFileSync } from "node:fs"
import http from "node:http"
import type net from "node:net"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { after, before, describe, test } from "node:test"
import tls from "node:tls"
import { startEchoBackend, type TestBackend } from "../helpers/backends.ts"
import { type ChildPortcullis, runningPorts, spawnPortcullis, writeTemp } from "../helpers/portcullis.ts"
import { type Pebble, type PebbleWrapper, served, startPebble, startPebbleWrapper } from "../tls/acme/harness.ts"
import { waitUntilAsync } from "./workers-wait.ts"

const dir = mkdtempSync(join(tmpdir(), "pc-acme-workers-"))

interface WorkerRow {
  worker: number
  pid: number
  ready: boolean
  accepted: number
}

interface Cluster {
  pc: ChildPortcullis
  web: number
  file: string
  yaml: string
  post(path: string): Promise<number>
  status(): Promise<{ generation: number; workers: WorkerRow[] }>
  /** lines: the primary's log lines with this msg */
  lines(msg: string): Record<string, unknown>[]
}

describe("ACME run by the primary of two workers (Pebble)", () => {
  let pebble: Pebble
  let root: string
  let echo: TestBackend
  const asked: string[] = []
  let wrapper: PebbleWrapper
  const accounts: { contact?: string[] }[] = []
  let askPort = 0
  const cleanups: (() => unknown)[] = []

  before(async () => {
    pebble = await startPebble({ after: (fn: () => unknown) => cleanups.push(fn) })
    root = await pebble.root()
    echo = await startEchoBackend("echo")
    cleanups.push(() => echo.close())
    // The operator's ask endpoint for on-demand TLS: names starting with "yes" are allowed.
    const ask = http.createServer((req, res) => {
      const domain = new URL(req.url ?? "/", "http://x").searchParams.get("domain") ?? ""
      asked.push(domain)
      res.writeHead(domain.startsWith("yes") ? 200 : 403).end()
    })
    // A second directory URL for the same CA (another storage folder, so another account and certificates), which
    // records the contact of every account registered through it.
    wrapper = await startPebbleWrapper({ after: (fn: () => unknown) => cleanups.push(fn) }, pebble, {
      handle: (req, _res, body) => {
        if (req.method === "POST" && req.url === "/sign-me-up") {
          const jws = JSON.parse(body.toString("utf8")) as { payload: string }
          accounts.push(JSON.parse(Buffer.from(jws.payload, "base64url").toString("utf8")) as { contact?: string[] })
        }
        return false
      },
    })
    await new Promise<void>((r) => ask.listen(0, "127.0.0.1", r))
    askPort = (ask.address() as net.AddressInfo).port
    cleanups.push(() => ask.close())
  })

  after(async () => {
    for (const fn of cleanups.reverse()) await fn()
    rmSync(dir, { recursive: true, force: true })
  })

  /** start runs a two-worker Portcullis with `{ acme: [name] }` on "web" and points Pebble's validation ports at it. */
  const start = async (
    t: { after(fn: () => unknown): void },
    name: string,
    acmeExtra: string[],
    point = true,
    options: { directory?: string; certificates?: string } = {},
  ): Promise<Cluster & { point(): void }> => {
    const dataDir = mkdtempSync(join(dir, "data-"))
    const yaml = `
listeners:
  - name: web
    address: 127.0.0.1:0
    tls: { certificates: ${options.certificates ?? `[{ acme: [${name}] }]`}, handshake_timeout: 30s }
    upstream: app
  - name: plain
    address: 127.0.0.2:0
    redirect_https: 443
upstreams: { app: { backends: ["127.0.0.1:${echo.port}"] } }
admin: { address: "127.0.0.1:0" }
access_log: { enabled: false }
shutdown_grace: 1s
cluster: { workers: 2 }
acme:
  directory: ${options.directory ?? pebble.directory}
  email: ops@example.test
  ca_bundle: ${pebble.caBundle}
${acmeExtra.map((l) => `  ${l}\n`).join("")}data_dir: ${dataDir}
`
    // Pebble's validation connections wait for this instance's ports (not the previous test's).
    pebble.http.hold()
    pebble.tls.hold()
    const file = writeTemp(dataDir, "portcullis.yaml", yaml)
    const pc = spawnPortcullis(["--config", file], { env: { PORTCULLIS_LOG_LEVEL: "info" } })
    t.after(() => pc.stop("SIGKILL"))
    const { ports, admin } = await runningPorts(pc, 60_000)
    const pointPebble = () => {
      pebble.http.point(ports["plain"]!, "127.0.0.2")
      pebble.tls.point(ports["web"]!)
    }
    if (point) pointPebble()
    const cluster: Cluster & { point(): void } = {
      point: pointPebble,
      pc,
      web: ports["web"]!,
      file,
      yaml,
      post: async (path) => {
        const res = await fetch(`http://127.0.0.1:${admin}${path}`, { method: "POST" })
        await res.body?.cancel()
        return res.status
      },
      status: async () => (await (await fetch(`http://127.0.0.1:${admin}/status`)).json()) as never,
      lines: (msg) =>
        pc
          .output()
          .split("\n")
          .filter((l) => l.includes(`"msg":"${msg}"`))
          .map((l) => JSON.parse(l) as Record<string, unknown>),
    }
    await waitUntilAsync(async () => (await cluster.status()).workers.every((w) => w.ready), "both workers ready")
    return cluster
  }

  /** issued waits for the primary's log line of `name`'s certificate (issued or renewed) and gives its serial. */
  const logged = async (c: Cluster, msg: string, name: string, count = 1): Promise<string[]> => {
    const serials = () =>
      c
        .lines(msg)
        .filter((l) => (l["names"] as string[]).includes(name))
        .map((l) => String(l["serial"]))
    await waitUntilAsync(async () => serials().length >= count, `${msg} for ${name}`, 60_000).catch((err) => {
      throw new Error(`${err}\n${c.pc.output()}`)
    })
    return serials()
  }

  /** serial connects with SNI `name`, verifying against Pebble's root, and gives the served certificate's serial. */
  const serial = async (c: Cluster, name: string, options: tls.ConnectionOptions = {}): Promise<string> => {
    const seen = await served(c.web, name, root, options)
    seen.socket.destroy()
    return seen.serial
  }

  /**
   * fromBoth makes rounds of connections until one round had every connection served `accept`able serials and both
   * workers accepted some of them (/status counts per worker); gives the serials of that round.
   */
  const fromBoth = async (
    c: Cluster,
    name: string,
    accept: (serial: string) => boolean,
    options: tls.ConnectionOptions = {},
  ): Promise<Set<string>> => {
    let last = ""
    for (let round = 0; round < 30; round++) {
      const before = await c.status()
      const serials = new Set<string>()
      for (let i = 0; i < 12; i++)
        serials.add(await serial(c, name, options).catch((err: Error) => `error: ${err.message}`))
      const after = await c.status()
      const took = after.workers.map((w, i) => w.accepted - before.workers[i]!.accepted)
      last = `serials ${[...serials].join(", ")}; accepted per worker ${took.join(", ")}`
      if ([...serials].every(accept) && took.every((n) => n > 0)) return serials
    }
    throw new Error(`no round where both workers served an accepted certificate: ${last}`)
  }

  test("both workers serve the stand-in while the name waits; one order reaches Pebble; both serve the issued certificate", async (t) => {
    const name = "both.workers.test"
    const orders = pebble.orders()
    const c = await start(t, name, ["challenges: [http-01]"], false)
    // Pebble's validation waits (its port is not pointed at us yet): both workers serve the self-signed stand-in.
    const pending = await served(c.web, name, root, { rejectUnauthorized: false })
    pending.socket.destroy()
    const standIn = new X509Certificate(pending.pem)
    assert.equal(standIn.issuer, standIn.subject, "the stand-in is self-signed")
    const waiting = await fromBoth(c, name, (s) => s === pending.serial, { rejectUnauthorized: false })
    assert.deepEqual([...waiting], [pending.serial])
    c.point()
    const [issued] = await logged(c, "acme certificate issued", name)
    assert.notEqual(issued, pending.serial)
    const serials = await fromBoth(c, name, (s) => s === issued)
    assert.deepEqual([...serials], [issued])
    assert.equal(pebble.orders() - orders, 1, "newOrder requests Pebble logged for the name")
    assert.equal(c.lines("acme certificate issued").length, 1, "one process ordered it")
    await c.pc.stop()
  })

  test("a replaced worker gets the certificate at start; a reload keeps the manager and orders only a new name", async (t) => {
    const name = "keep.workers.test"
    const added = "added.workers.test"
    const c = await start(t, name, ["challenges: [http-01]"])
    const [issued] = await logged(c, "acme certificate issued", name)
    await fromBoth(c, name, (s) => s === issued)
    const orders = pebble.orders()
    // A SIGKILLed worker's replacement starts with the primary's certificates: no stand-in, no order.
    const victim = (await c.status()).workers[0]!
    process.kill(victim.pid, "SIGKILL")
    await waitUntilAsync(async () => {
      const w = (await c.status()).workers[0]!
      return w.pid !== victim.pid && w.ready
    }, "worker 0 replaced")
    await fromBoth(c, name, (s) => s === issued)
    assert.equal(pebble.orders(), orders, "no order for the replacement")
    // A reload with the same acme section and one more entry: the running manager keeps the first certificate.
    writeFileSync(c.file, c.yaml.replace(`{ acme: [${name}] }`, `{ acme: [${name}] }, { acme: [${added}] }`))
    assert.equal(await c.post("/reload"), 200)
    const [second] = await logged(c, "acme certificate issued", added)
    await fromBoth(c, added, (s) => s === second)
    await fromBoth(c, name, (s) => s === issued)
    assert.equal(pebble.orders() - orders, 1, "one order, for the added name only")
    assert.equal(c.lines("acme certificate issued").length, 2)
    await c.pc.stop()
  })

  test("a renewal reaches both workers in place: a keep-alive connection stays open and sessions resume", async (t) => {
    const name = "renew.workers.test"
    const orders = pebble.orders()
    // Pebble's certificates last 3600 s: renewed about 5 s after each issuance.
    const c = await start(t, name, ["challenges: [http-01]", "renew_before: 3595s"])
    const [first] = await logged(c, "acme certificate issued", name)
    await fromBoth(c, name, (s) => s === first)
    const generation = (await c.status()).generation
    // A keep-alive connection on the first certificate, and a TLS 1.3 session to resume later.
    const kept = await served(c.web, name, root, { ALPNProtocols: ["http/1.1"] })
    assert.equal(await get(kept.socket, name), 200)
    const session = await sessionOf(c.web, name, root)
    const [renewed] = await logged(c, "acme certificate renewed", name)
    assert.notEqual(renewed, first)
    const serials = await fromBoth(c, name, (s) => s !== first && !s.startsWith("error"))
    const all = new Set(c.lines("acme certificate renewed").map((l) => String(l["serial"])))
    for (const s of serials) assert.ok(all.has(s), `${s} is a renewal the primary logged`)
    assert.equal(await get(kept.socket, name), 200, "the keep-alive connection still answers")
    assert.equal(kept.serial, first)
    kept.socket.destroy()
    assert.equal((await c.status()).generation, generation, "swapped in place: no reload")
    // Sessions resume across the swap, whichever worker takes the connection.
    for (let i = 0; i < 6; i++) {
      const resumed = await served(c.web, name, root, { session, maxVersion: "TLSv1.3" })
      const reused = resumed.socket.isSessionReused()
      resumed.socket.destroy()
      assert.equal(reused, true, `resumption ${i}`)
    }
    await c.pc.stop()
    const ordered = c.lines("acme certificate issued").length + c.lines("acme certificate renewed").length
    assert.equal(pebble.orders() - orders, ordered, "one order per issuance or renewal, not one per worker")
  })

  for (const challenge of ["http-01", "tls-alpn-01"] as const) {
    test(`${challenge} is answered by whichever worker Pebble's validation reaches`, async (t) => {
      const c = await start(t, `base-${challenge}.od.test`, [
        `challenges: [${challenge}]`,
        `on_demand: { ask: "http://127.0.0.1:${askPort}/ask", names: ["*.od.test"], rate: 20, max_in_flight: 4 }`,
      ])
      await logged(c, "acme certificate issued", `base-${challenge}.od.test`)
      const { workers } = await c.status()
      for (const stopped of workers) {
        // The stopped worker accepts nothing: the handshake and Pebble's validation both land on the other one.
        const name = `yes-${challenge}-${stopped.worker}.od.test`
        const orders = pebble.orders()
        // Pebble validates through this port (pointed at the listener the challenge is answered on).
        const validator = challenge === "http-01" ? pebble.http : pebble.tls
        const validations = validator.connections
        process.kill(stopped.pid, "SIGSTOP")
        try {
          const seen = await served(c.web, name, root)
          seen.socket.destroy()
          assert.equal(seen.subjectaltname, `DNS:${name}`)
        } finally {
          process.kill(stopped.pid, "SIGCONT")
        }
        assert.equal(pebble.orders() - orders, 1, `one order for ${name}`)
        assert.ok(validator.connections > validations, `Pebble validated ${name} by ${challenge}`)
      }
      await c.pc.stop()
    })
  }

  test("on-demand: both workers see a new name at once; the primary asks once and places one order", async (t) => {
    const c = await start(t, "base-burst.od.test", [
      "challenges: [http-01]",
      `on_demand: { ask: "http://127.0.0.1:${askPort}/ask", names: ["*.od.test"], rate: 20, max_in_flight: 4 }`,
    ])
    await logged(c, "acme certificate issued", "base-burst.od.test")
    let both = false
    for (let attempt = 0; attempt < 5 && !both; attempt++) {
      const name = `yes-burst-${attempt}.od.test`
      const orders = pebble.orders()
      const before = await c.status()
      const seen = await Promise.all(Array.from({ length: 8 }, () => served(c.web, name, root)))
      for (const s of seen) s.socket.destroy()
      const after = await c.status()
      for (const s of seen) assert.equal(s.subjectaltname, `DNS:${name}`)
      assert.equal(new Set(seen.map((s) => s.serial)).size, 1, "one certificate for every handshake")
      assert.equal(asked.filter((d) => d === name).length, 1, "the ask URL was asked once")
      assert.equal(pebble.orders() - orders, 1, "one order")
      both = after.workers.every((w, i) => w.accepted > before.workers[i]!.accepted)
    }
    assert.ok(both, "in some burst both workers took handshakes for the new name")
    await c.pc.stop()
  })

  test("a reload that changes the acme section: a new contact gets a new account, a changed name set an order, a removed name is no longer served, a kept one keeps its certificate", async (t) => {
    const entries = (list: string[][]) => `[${list.map((names) => `{ acme: [${names.join(", ")}] }`).join(", ")}]`
    const keep = "keep.change.test"
    const gone = "gone.change.test"
    const set = "set.change.test"
    const more = "more.change.test"
    const certificates = entries([[keep], [gone], [set]])
    const c = await start(t, keep, ["challenges: [http-01]"], true, { directory: wrapper.directory, certificates })
    const kept = (await logged(c, "acme certificate issued", keep))[0]!
    const removed = (await logged(c, "acme certificate issued", gone))[0]!
    await logged(c, "acme certificate issued", set)
    await fromBoth(c, keep, (s) => s === kept)
    await fromBoth(c, gone, (s) => s === removed)
    const mailto = (email: string) => accounts.filter((a) => a.contact?.includes(`mailto:${email}`)).length
    assert.equal(mailto("ops@example.test"), 1, "one account registered")
    const orders = pebble.orders()
    writeFileSync(
      c.file,
      c.yaml
        .replace("email: ops@example.test", "email: new@example.test")
        .replace(certificates, entries([[keep], [set, more]])),
    )
    assert.equal(await c.post("/reload"), 200)
    // The changed name set is ordered (by the new contact's account) and both workers serve it for both names.
    const [both] = await logged(c, "acme certificate issued", more)
    await fromBoth(c, more, (s) => s === both)
    await fromBoth(c, set, (s) => s === both)
    assert.equal(mailto("new@example.test"), 1, "the new contact registered a new account")
    // An unchanged name keeps its certificate (no order), a removed one is not served any more.
    await fromBoth(c, keep, (s) => s === kept)
    await fromBoth(c, gone, (s) => s !== removed && !s.startsWith("error"), { rejectUnauthorized: false })
    assert.equal(pebble.orders() - orders, 1, "one order: the changed name set")
    await c.pc.stop()
  })

  test("a reload to another directory: both workers serve what the new directory's manager has (the stand-in), then its certificate", async (t) => {
    const name = "dir.change.test"
    const c = await start(t, name, ["challenges: [http-01]"])
    const [first] = await logged(c, "acme certificate issued", name)
    await fromBoth(c, name, (s) => s === first)
    const orders = wrapper.newOrders.length
    // Pebble's validation waits until pointed again: the new directory's order stays pending meanwhile.
    pebble.http.hold()
    writeFileSync(c.file, c.yaml.replace(`directory: ${pebble.directory}`, `directory: ${wrapper.directory}`))
    assert.equal(await c.post("/reload"), 200)
    const pending = await fromBoth(c, name, (s) => s !== first && !s.startsWith("error"), { rejectUnauthorized: false })
    assert.equal(pending.size, 1, "one certificate on both workers while the order is pending")
    const standIn = await served(c.web, name, root, { rejectUnauthorized: false })
    standIn.socket.destroy()
    assert.equal(new X509Certificate(standIn.pem).issuer, new X509Certificate(standIn.pem).subject, "self-signed")
    c.point()
    const issued = await logged(c, "acme certificate issued", name, 2)
    const second = issued[1]!
    assert.notEqual(second, first)
    await fromBoth(c, name, (s) => s === second)
    assert.equal(wrapper.newOrders.length - orders, 1, "ordered through the new directory")
    await c.pc.stop()
  })

  test("a reload that drops an on-demand pattern: both workers stop serving the names it had obtained", async (t) => {
    const onDemand = (pattern: string) =>
      `on_demand: { ask: "http://127.0.0.1:${askPort}/ask", names: ["${pattern}"], rate: 20, max_in_flight: 4 }`
    const c = await start(t, "base-drop.od.test", ["challenges: [http-01]", onDemand("*.od.test")])
    await logged(c, "acme certificate issued", "base-drop.od.test")
    const name = "yes-drop.od.test"
    const seen = await served(c.web, name, root)
    seen.socket.destroy()
    assert.equal(seen.subjectaltname, `DNS:${name}`)
    await fromBoth(c, name, (s) => s === seen.serial)
    writeFileSync(c.file, c.yaml.replace(onDemand("*.od.test"), onDemand("*.other.test")))
    assert.equal(await c.post("/reload"), 200)
    await fromBoth(c, name, (s) => s !== seen.serial && !s.startsWith("error"), { rejectUnauthorized: false })
    await c.pc.stop()
  })

  test("while_pending: refuse with on-demand: both workers refuse the pending name and names ask refused, then serve what the primary obtained", async (t) => {
    const c = await start(
      t,
      "base-refuse.odr.test",
      [
        "challenges: [http-01]",
        "while_pending: refuse",
        `on_demand: { ask: "http://127.0.0.1:${askPort}/ask", names: ["*.odr.test"], rate: 20, max_in_flight: 4 }`,
      ],
      false,
    )
    const refused = (s: string) => s.startsWith("error") && /unrecognized.name/i.test(s)
    // Pebble's validation waits: the listener's only certificate is pending, so every name is refused, on both.
    await fromBoth(c, "base-refuse.odr.test", refused)
    await fromBoth(c, "no-refuse.odr.test", refused)
    c.point()
    const [base] = await logged(c, "acme certificate issued", "base-refuse.odr.test")
    await fromBoth(c, "base-refuse.odr.test", (s) => s === base)
    // A name ask refuses now gets the listener's certificate (issued), not an on-demand one.
    await fromBoth(c, "no-refuse.odr.test", (s) => s === base, { rejectUnauthorized: false })
    assert.ok(!asked.includes("base-refuse.odr.test"), "the configured name is not asked about")
    const orders = pebble.orders()
    const seen = await served(c.web, "yes-refuse.odr.test", root)
    seen.socket.destroy()
    assert.equal(seen.subjectaltname, "DNS:yes-refuse.odr.test")
    await fromBoth(c, "yes-refuse.odr.test", (s) => s === seen.serial)
    assert.equal(pebble.orders() - orders, 1, "one order for the on-demand name")
    await c.pc.stop()
  })
})

/** get sends one HTTP/1.1 request on an open TLS socket (keep-alive) and resolves with the status code. */
function get(socket: tls.TLSSocket, host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    let text = ""
    const onData = (chunk: Buffer) => {
      text += chunk.toString("latin1")
      const head = text.indexOf("\r\n\r\n")
      const length = /content-length: *(\d+)/i.exec(text)
      if (head >= 0 && length && text.length >= head + 4 + Number(length[1])) {
        socket.off("data", onData)
        clearTimeout(timer)
        resolve(Number(text.slice(9, 12)))
      }
    }
    const timer = setTimeout(() => reject(new Error(`no answer on the kept connection: ${text}`)), 10_000)
    socket.on("data", onData)
    socket.write(`GET / HTTP/1.1\r\nhost: ${host}\r\n\r\n`)
  })
}

/** sessionOf makes a TLS 1.3 connection and resolves with the session its ticket carries. */
function sessionOf(port: number, name: string, ca: string): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({
      host: "127.0.0.1",
      port,
      servername: name,
      maxVersion: "TLSv1.3",
      ca,
    })
    socket.once("session", (session: Buffer) => {
      socket.destroy()
      resolve(session)
    })
    socket.once("error", reject)
  })
}
