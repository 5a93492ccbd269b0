/**
 * Pebble for the ACME tests: pebble + pebble-challtestsrv per test file on OS-chosen ports (read back with ss), a
 * per-test CA for Pebble's own HTTPS, and two TCP forwarders bound before Pebble starts (its httpPort and tlsPort,
 * where it validates) that the test points at Portcullis's listeners once those are bound on port 0.
 */
import { type ChildProcess, execFileSync, spawn } from "node:child_process"
import { mkdtempSync, writeFileSync } from "node:fs"
import type http from "node:http"
import https from "node:https"
import net from "node:net"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { Writable } from "node:stream"
import type { TestContext } from "node:test"
import tls from "node:tls"
import { parseConfig } from "../../../src/config/load.ts"
import { createLogger } from "../../../src/core/log.ts"
import { Runtime } from "../../../src/runtime.ts"
import { createPki } from "../../helpers/pki.ts"

/**
 * Forwarder: a loopback TCP port that pipes each connection to the port given to `point` (connections that come
 * before it wait for it, up to 10 s).
 */
export interface Forwarder {
  port: number
  connections: number
  point(target: number, host?: string): void
  /** hold makes new connections wait for the next point() (a test about to start another Portcullis) */
  hold(): void
  close(): void
}

export async function startForwarder(): Promise<Forwarder> {
  const sockets = new Set<net.Socket>()
  let target: number | undefined
  let targetHost = "127.0.0.1"
  const waiting: (() => void)[] = []
  const forwarder: Forwarder = {
    port: 0,
    connections: 0,
    point: (port, host = "127.0.0.1") => {
      target = port
      targetHost = host
      for (const go of waiting.splice(0)) go()
    },
    hold: () => {
      target = undefined
    },
    close: () => {},
  }
  const server = net.createServer((socket) => {
    forwarder.connections++
    socket.on("error", () => {})
    socket.pause()
    if (target === undefined) {
      const timer = setTimeout(() => socket.destroy(), 10_000)
      waiting.push(() => {
        clearTimeout(timer)
        pipe(socket)
      })
      return
    }
    pipe(socket)
  })
  const pipe = (socket: net.Socket) => {
    if (socket.destroyed) return
    const upstream = net.connect({ host: targetHost, port: target! })
    upstream.on("error", () => socket.destroy())
    socket.on("close", () => upstream.destroy())
    upstream.on("close", () => socket.destroy())
    sockets.add(socket).add(upstream)
    socket.pipe(upstream).pipe(socket)
    socket.resume()
  }
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
  forwarder.port = (server.address() as net.AddressInfo).port
  forwarder.close = () => {
    for (const s of sockets) s.destroy()
    server.close()
  }
  return forwarder
}

/** listeningPorts reads the ports a process listens on (tcp or udp) from `ss`. */
function listeningPorts(pid: number, proto: "t" | "u"): number[] {
  const out = execFileSync("ss", ["-H", `-ln${proto}p`], { encoding: "utf8" })
  return out
    .split("\n")
    .filter((line) => line.includes(`pid=${pid},`))
    .map((line) => Number(/127\.0\.0\.1:(\d+)/.exec(line)?.[1]))
    .filter((p) => p > 0)
}

/** waitFor waits (20 ms steps, bounded) for f to give a value. */
async function waitFor<T>(f: () => T | undefined, what: string, timeoutMs = 10_000): Promise<T> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const v = f()
    if (v !== undefined) return v
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 20))
  }
}

/** get fetches over HTTPS with a CA (Pebble's own listener). */
export function httpsGet(url: string, ca: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = https.get(url, { ca, timeout: 5_000 }, (res) => {
      const chunks: Buffer[] = []
      res.on("data", (c: Buffer) => chunks.push(c))
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString("utf8") }))
    })
    req.on("error", reject)
    req.on("timeout", () => req.destroy(new Error("timeout")))
  })
}

/** post sends JSON to challtestsrv's management API. */
async function post(port: number, path: string, body: unknown): Promise<void> {
  const res = await fetch(`http://127.0.0.1:${port}${path}`, { method: "POST", body: JSON.stringify(body) })
  await res.body?.cancel()
  if (res.status !== 200) throw new Error(`challtestsrv ${path}: ${res.status}`)
}

export interface PebbleOptions {
  /** Pebble's certificateValidityPeriod, in seconds (default 3600) */
  validitySeconds?: number
  /** external account binding required, with these MAC keys by key id (Pebble's externalAccountMACKeys) */
  eab?: Record<string, string>
}

/** Pebble: one running pebble + challtestsrv pair. */
export interface Pebble {
  dir: string
  /** the ACME directory URL */
  directory: string
  /** PEM file of the CA of Pebble's own HTTPS listener (acme.ca_bundle) */
  caBundle: string
  /** the PEM text of that CA */
  ca: string
  /** the certificate and key of Pebble's HTTPS listener (for a test server beside it, e.g. the ARI wrapper) */
  leaf: { cert: string; key: string }
  http: Forwarder
  tls: Forwarder
  /** challtestsrv's management port (POST /set-txt, /clear-txt) */
  challtestPort: number
  /** root fetches the root that issues Pebble's certificates (management /roots/0) */
  root(): Promise<string>
  /** orders counts the newOrder requests Pebble logged so far */
  orders(): number
  output(): string
  close(): void
}

function run(
  command: string,
  args: string[],
  env: NodeJS.ProcessEnv,
  cwd: string,
): { child: ChildProcess; out: () => string } {
  let text = ""
  const child = spawn(command, args, { cwd, env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] })
  child.stdout!.on("data", (c: Buffer) => {
    text += c.toString("utf8")
  })
  child.stderr!.on("data", (c: Buffer) => {
    text += c.toString("utf8")
  })
  return { child, out: () => text }
}

/** startPebble runs pebble-challtestsrv and pebble for one test file; stopped after it. */
/** After: what startPebble needs of a test context (its own cleanup list in a before hook works too). */
export interface After {
  after(fn: () => unknown): void
}

export async function startPebble(t: TestContext | After, options: PebbleOptions = {}): Promise<Pebble> {
  const dir = mkdtempSync(join(tmpdir(), "pc-pebble-"))
  const pki = await createPki()
  const leaf = await pki.issue({ names: ["127.0.0.1", "localhost"] })
  const caBundle = join(dir, "pebble-ca.pem")
  writeFileSync(caBundle, pki.ca.cert)
  const [http, tlsFw] = await Promise.all([startForwarder(), startForwarder()])

  const challtest = run(
    "pebble-challtestsrv",
    [
      "-dns01",
      "127.0.0.1:0",
      "-management",
      "127.0.0.1:0",
      "-defaultIPv4",
      "127.0.0.1",
      "-defaultIPv6",
      "",
      "-http01",
      "",
      "-https01",
      "",
      "-tlsalpn01",
      "",
    ],
    {},
    dir,
  )
  const ctPid = challtest.child.pid!
  const dnsPort = await waitFor(() => listeningPorts(ctPid, "u")[0], "challtestsrv's DNS port")
  const tcpPorts = await waitFor(() => {
    const ports = listeningPorts(ctPid, "t")
    return ports.length >= 2 ? ports : undefined
  }, "challtestsrv's management port")
  let challtestPort = 0
  for (const port of tcpPorts) {
    try {
      const res = await fetch(`http://127.0.0.1:${port}/`, { signal: AbortSignal.timeout(1_000) })
      await res.body?.cancel()
      challtestPort = port
      break
    } catch {
      // the DNS-over-TCP port
    }
  }
  if (!challtestPort) throw new Error(`no challtestsrv management port among ${tcpPorts.join(", ")}`)

  const config = join(dir, "pebble.json")
  writeFileSync(
    config,
    JSON.stringify({
      pebble: {
        listenAddress: "127.0.0.1:0",
        managementListenAddress: "127.0.0.1:0",
        certificate: leaf.certPath,
        privateKey: leaf.keyPath,
        httpPort: http.port,
        tlsPort: tlsFw.port,
        ocspResponderURL: "",
        externalAccountBindingRequired: options.eab !== undefined,
        ...(options.eab ? { externalAccountMACKeys: options.eab } : {}),
        certificateValidityPeriod: options.validitySeconds ?? 3600,
      },
    }),
  )
  const pebble = run(
    "pebble",
    ["-config", config, "-dnsserver", `127.0.0.1:${dnsPort}`],
    // Real validation, no random sleeps, no random nonce rejections, and PEBBLE_AUTHZREUSE=0
    // (a renewal is validated again, so a failing challenge fails it). Pebble still reuses a valid authorization
    // about 1 time in 100 at 0 (it makes a new one only when rand.Intn(100) > the percentage):
    // a test that needs a renewal to fail must allow for one that did not (dns-01.test.ts).
    { PEBBLE_VA_NOSLEEP: "1", PEBBLE_VA_ALWAYS_VALID: "0", PEBBLE_WFE_NONCEREJECT: "0", PEBBLE_AUTHZREUSE: "0" },
    dir,
  )
  const close = () => {
    pebble.child.kill()
    challtest.child.kill()
    http.close()
    tlsFw.close()
    void pki.close()
  }
  t.after(close)
  await waitFor(() => (pebble.out().includes("ACME directory available") ? true : undefined), "pebble to start")
  const pid = pebble.child.pid!
  const ports = await waitFor(() => {
    const p = listeningPorts(pid, "t")
    return p.length >= 2 ? p : undefined
  }, "pebble's ports")
  let acmePort = 0
  let managementPort = 0
  for (const port of ports) {
    const res = await httpsGet(`https://127.0.0.1:${port}/dir`, pki.ca.cert)
    if (res.status === 200 && res.body.includes("newOrder")) acmePort = port
    else managementPort = port
  }
  if (!acmePort || !managementPort) throw new Error(`pebble's ports ${ports.join(", ")}: no directory found`)
  return {
    dir,
    directory: `https://127.0.0.1:${acmePort}/dir`,
    caBundle,
    ca: pki.ca.cert,
    leaf: { cert: leaf.cert, key: leaf.key },
    http,
    tls: tlsFw,
    challtestPort,
    root: async () => (await httpsGet(`https://127.0.0.1:${managementPort}/roots/0`, pki.ca.cert)).body,
    orders: () =>
      pebble
        .out()
        .split("\n")
        .filter((l) => l.includes("POST /order-plz")).length,
    output: pebble.out,
    close,
  }
}

/** setTxt and clearTxt drive challtestsrv's DNS (what a dns_hook does in the tests). */
export const challtest = {
  setTxt: (port: number, host: string, value: string) => post(port, "/set-txt", { host, value }),
  clearTxt: (port: number, host: string) => post(port, "/clear-txt", { host }),
}

/** served connects to a TLS port with SNI `name`, verifying against `root`; resolves the leaf it saw. */
export function served(
  port: number,
  name: string,
  root: string,
  extra: tls.ConnectionOptions = {},
): Promise<{
  serial: string
  subjectaltname: string
  pem: string
  socket: tls.TLSSocket
  session: Buffer | undefined
}> {
  return new Promise((resolve, reject) => {
    let session: Buffer | undefined
    const socket = tls.connect({ host: "127.0.0.1", port, servername: name, ca: root, ...extra }, () => {
      const cert = socket.getPeerCertificate()
      // TLS 1.3 tickets arrive after the handshake: give the session event a moment via the first read.
      const pem = socket.getPeerX509Certificate()?.toString() ?? ""
      resolve({ serial: cert.serialNumber, subjectaltname: cert.subjectaltname ?? "", pem, socket, session })
    })
    socket.on("session", (s: Buffer) => {
      session = s
    })
    socket.once("error", reject)
  })
}

/** LogLines: the JSON lines a runtime logged, parsed. */
export interface LogLines {
  logger: import("../../../src/core/log.ts").Logger
  lines: Record<string, unknown>[]
  /** with: the lines whose msg starts with `prefix` */
  with(prefix: string): Record<string, unknown>[]
}

export function captureLog(): LogLines {
  const lines: Record<string, unknown>[] = []
  let partial = ""
  const destination = new Writable({
    write(chunk: Buffer, _enc, done) {
      partial += chunk.toString("utf8")
      let nl = partial.indexOf("\n")
      while (nl >= 0) {
        const line = partial.slice(0, nl)
        partial = partial.slice(nl + 1)
        try {
          lines.push({ ...(JSON.parse(line) as Record<string, unknown>), at: Date.now() })
        } catch {
          // not JSON
        }
        nl = partial.indexOf("\n")
      }
      done()
    },
  })
  const logger = createLogger({ level: "info", destination })
  return { logger, lines, with: (prefix) => lines.filter((l) => String(l["msg"] ?? "").startsWith(prefix)) }
}

/** AcmeSetup: a Portcullis runtime with an acme config, its listeners wired to Pebble's validation ports. */
export interface AcmeSetup {
  runtime: Runtime
  log: LogLines
  dataDir: string
  port(listener: string): number
  close(): Promise<void>
}

/**
 * startAcmePortcullis runs Portcullis in-process from `yaml` (ACME_BLOCK in it is replaced by the acme section for
 * `pebble` plus `acmeExtra` lines), then points Pebble's http and tls validation ports at the listeners named
 * "plain" and "web".
 */
export async function startAcmePortcullis(
  t: { after(fn: () => unknown): void },
  pebble: Pebble,
  yaml: string,
  acmeExtra: string[] = [],
  dataDir = mkdtempSync(join(tmpdir(), "pc-acme-data-")),
): Promise<AcmeSetup> {
  const acme = [
    "acme:",
    `  directory: ${pebble.directory}`,
    "  email: ops@example.test",
    `  ca_bundle: ${pebble.caBundle}`,
    ...acmeExtra.map((l) => `  ${l}`),
    `data_dir: ${dataDir}`,
  ].join("\n")
  const log = captureLog()
  const runtime = new Runtime(log.logger)
  await runtime.start(parseConfig(yaml.replace("ACME_BLOCK", acme), "test.yaml", dataDir))
  const ports = runtime.ports()
  const hostOf = (name: string) => runtime.generation!.config.listeners.find((l) => l.name === name)!.address.host
  if (ports["plain"]) pebble.http.point(ports["plain"], hostOf("plain"))
  if (ports["web"]) pebble.tls.point(ports["web"], hostOf("web"))
  let closed = false
  const close = async () => {
    if (closed) return
    closed = true
    await runtime.close(200)
  }
  t.after(close)
  return { runtime, log, dataDir, port: (l) => runtime.ports()[l]!, close }
}

/** until waits (20 ms steps) for a condition, failing with `what` after timeoutMs. */
export async function until(condition: () => boolean, what: string, timeoutMs = 20_000): Promise<void> {
  await waitFor(() => (condition() ? true : undefined), what, timeoutMs)
}

/** WrapperOptions: how a PebbleWrapper changes what Portcullis sees of Pebble. */
export interface WrapperOptions {
  /** edits Pebble's directory before it is served (its URLs already point at the wrapper's origin) */
  directory?(dir: Record<string, unknown>, origin: string): void
  /** answers a request itself (returns true) instead of forwarding it to Pebble */
  handle?(req: http.IncomingMessage, res: http.ServerResponse, body: Buffer): boolean
}

/** PebbleWrapper: an HTTPS front of Pebble; `newOrders` are the payloads of the newOrder requests it forwarded. */
export interface PebbleWrapper {
  /** the wrapper's directory URL (acme.directory) */
  directory: string
  origin: string
  newOrders: Record<string, unknown>[]
}

/**
 * startPebbleWrapper puts an HTTPS server (Pebble's own certificate, so acme.ca_bundle stays) in front of Pebble for
 * what Debian's Pebble lacks (ARI's renewalInfo, the profiles of draft-ietf-acme-profiles). Its directory is Pebble's
 * with every URL on the wrapper, and every other request is forwarded to Pebble with the wrapper's Host header:
 * Pebble builds its URLs and checks each JWS `url` (RFC 8555 §6.4) from that header, so the whole conversation stays
 * on the wrapper. The payload of each newOrder JWS is recorded.
 */
export async function startPebbleWrapper(
  t: { after(fn: () => unknown): void },
  pebble: Pebble,
  options: WrapperOptions = {},
): Promise<PebbleWrapper> {
  const upstream = new URL(pebble.directory)
  const newOrders: Record<string, unknown>[] = []
  let origin = ""
  let newOrderPath = ""
  const server = https.createServer({ cert: pebble.leaf.cert, key: pebble.leaf.key }, (req, res) => {
    const chunks: Buffer[] = []
    req.on("data", (c: Buffer) => chunks.push(c))
    req.on("end", () => {
      const body = Buffer.concat(chunks)
      if (options.handle?.(req, res, body)) return
      if (req.method === "POST" && req.url === newOrderPath) {
        const jws = JSON.parse(body.toString("utf8")) as { payload: string }
        newOrders.push(JSON.parse(Buffer.from(jws.payload, "base64url").toString("utf8")) as Record<string, unknown>)
      }
      const forward = https.request(
        {
          host: upstream.hostname,
          port: upstream.port,
          method: req.method,
          path: req.url,
          headers: req.headers,
          ca: pebble.ca,
          timeout: 10_000,
        },
        (answer) => {
          const parts: Buffer[] = []
          answer.on("data", (c: Buffer) => parts.push(c))
          answer.on("end", () => {
            let text = Buffer.concat(parts)
            if (req.url === upstream.pathname && answer.statusCode === 200) {
              const dir = JSON.parse(text.toString("utf8")) as Record<string, unknown>
              for (const [key, value] of Object.entries(dir))
                if (typeof value === "string") dir[key] = value.replace(upstream.origin, origin)
              newOrderPath = new URL(String(dir["newOrder"])).pathname
              options.directory?.(dir, origin)
              text = Buffer.from(JSON.stringify(dir))
            }
            const headers = { ...answer.headers, "content-length": String(text.length) }
            delete headers["transfer-encoding"]
            res.writeHead(answer.statusCode ?? 502, headers).end(text)
          })
        },
      )
      forward.on("timeout", () => forward.destroy(new Error("pebble did not answer")))
      forward.on("error", () => res.writeHead(502).end())
      forward.end(body)
    })
  })
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
  origin = `https://127.0.0.1:${(server.address() as net.AddressInfo).port}`
  t.after(() => {
    server.closeAllConnections()
    server.close()
  })
  return { directory: `${origin}${upstream.pathname}`, origin, newOrders }
}
