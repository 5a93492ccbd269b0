/**
 * @module tls-worker: a lean TLS client run in worker threads. Modes: "full" (a new connection with a full
 * handshake and one GET per connection), "resumed" (the same, resuming with the latest session ticket) and "idle"
 * (open N keep-alive connections, one GET each, then hold them open). It counts everything it checks into a
 * SharedArrayBuffer the main thread reads at the window edges.
 */
import tls from "node:tls"
import { parentPort, workerData } from "node:worker_threads"

/** Counter indexes inside one worker's slice of the shared counters. */
export const C = {
  done: 0,
  full: 1,
  resumed: 2,
  errors: 3,
  badStatus: 4,
  badBody: 5,
  notTls13: 6,
  wrongCipher: 7,
  opened: 8,
  closedEarly: 9,
  certMismatch: 10,
  /** handshakes whose key exchange was X25519 (getEphemeralKeyInfo), and those with any other group */
  x25519: 11,
  otherGroup: 12,
  /** NewSessionTickets received on resumed connections (W5: what the server sends after a resumption) */
  ticketsAfterResume: 13,
  /** NewSessionTickets received on full-handshake connections */
  ticketsAfterFull: 14,
} as const
export const STRIDE = 16
/** Control values: RUN, STOP (finish in-flight, stop), RELEASE (idle mode: close the held connections). */
export const CONTROL = { RUN: 0, STOP: 1, RELEASE: 2 } as const

/** TLS_CLIENT_OPTIONS are the client's TLS settings for every workload: one suite and one group, so every target does the same crypto. */
export const TLS_CLIENT_OPTIONS = {
  ciphers: "TLS_AES_128_GCM_SHA256:ECDHE-ECDSA-AES128-GCM-SHA256",
  ecdhCurve: "X25519",
} as const
/** CONNECT_OPTIONS go with every connection; the SecureContext is made once per worker (one per connection is costly). */
const CONNECT_OPTIONS = { ALPNProtocols: ["http/1.1"], servername: "localhost", rejectUnauthorized: false } as const
export const EXPECTED_CIPHER = "TLS_AES_128_GCM_SHA256"
/** EXPECTED_GROUP: the one group the client offers (TLS_CLIENT_OPTIONS.ecdhCurve), checked on every handshake. */
export const EXPECTED_GROUP = "X25519"

/** WorkerConfig is the workerData a tls-worker gets. */
export interface WorkerConfig {
  mode: "full" | "resumed" | "idle"
  port: number
  path: string
  expectedBody: number
  concurrency: number
  /** idle mode: how many connections this worker opens and holds */
  count: number
  index: number
  counters: SharedArrayBuffer
  control: SharedArrayBuffer
  fingerprint256: string
}

interface ResponseState {
  buf: Buffer
  headEnd: number
  status: number
  length: number
  chunked: boolean
}

/** responseComplete parses what has arrived; returns true once a whole response (Content-Length or chunked) is in. */
function responseComplete(r: ResponseState): boolean {
  if (r.headEnd < 0) {
    const end = r.buf.indexOf("\r\n\r\n")
    if (end < 0) return false
    r.headEnd = end + 4
    const head = r.buf.subarray(0, end).toString("latin1")
    r.status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(head)?.[1] ?? 0)
    const cl = /\r\ncontent-length:\s*(\d+)/i.exec(head)
    r.chunked = /\r\ntransfer-encoding:\s*chunked/i.test(head)
    r.length = cl ? Number(cl[1]) : -1
  }
  if (r.chunked) return r.buf.subarray(r.buf.length - 5).toString("latin1") === "0\r\n\r\n"
  if (r.length >= 0) return r.buf.length - r.headEnd >= r.length
  return false
}

function bodyLength(r: ResponseState): number {
  const body = r.buf.subarray(r.headEnd)
  if (!r.chunked) return body.length
  let total = 0
  let pos = 0
  for (;;) {
    const eol = body.indexOf("\r\n", pos)
    if (eol < 0) return total
    const size = Number.parseInt(body.subarray(pos, eol).toString("latin1"), 16)
    if (!Number.isFinite(size) || size === 0) return total
    total += size
    pos = eol + 2 + size + 2
  }
}

function run(cfg: WorkerConfig): void {
  const counters = new Int32Array(cfg.counters, cfg.index * STRIDE * 4, STRIDE)
  const control = new Int32Array(cfg.control)
  const add = (i: number) => Atomics.add(counters, i, 1)
  const keepAlive = cfg.mode === "idle"
  const request = Buffer.from(
    `GET ${cfg.path} HTTP/1.1\r\nHost: localhost\r\nUser-Agent: portcullis-bench\r\n${keepAlive ? "" : "Connection: close\r\n"}\r\n`,
  )
  let session: Buffer | undefined
  let inFlight = 0
  let started = 0
  let checkedCert = false
  const held: tls.TLSSocket[] = []
  const otherGroups = new Set<string>()
  const secureContext = tls.createSecureContext(TLS_CLIENT_OPTIONS)

  const maybeFinish = () => {
    if (inFlight === 0 && Atomics.load(control, 0) !== CONTROL.RUN && cfg.mode !== "idle") {
      parentPort?.postMessage({ type: "finished" })
    }
  }

  const connectOne = () => {
    inFlight++
    started++
    const sock = tls.connect({
      host: "127.0.0.1",
      port: cfg.port,
      secureContext,
      ...CONNECT_OPTIONS,
      ...(cfg.mode === "resumed" && session ? { session } : {}),
    })
    const r: ResponseState = { buf: Buffer.alloc(0), headEnd: -1, status: 0, length: -1, chunked: false }
    let answered = false
    let failed = false
    let tickets = 0
    let reused = false
    sock.on("session", (s: Buffer) => {
      tickets++
      if (cfg.mode === "resumed") session = s
    })
    sock.on("secureConnect", () => {
      reused = sock.isSessionReused()
      if (reused) add(C.resumed)
      else add(C.full)
      // The key exchange's group, as the client saw it: every target must do the same one.
      const group = sock.getEphemeralKeyInfo()
      const groupName = group && "name" in group ? String(group.name) : "none"
      if (groupName === EXPECTED_GROUP) add(C.x25519)
      else {
        add(C.otherGroup)
        if (!otherGroups.has(groupName)) {
          otherGroups.add(groupName)
          parentPort?.postMessage({ type: "group", name: groupName })
        }
      }
      if (sock.getProtocol() !== "TLSv1.3") add(C.notTls13)
      if (sock.getCipher().standardName !== EXPECTED_CIPHER) add(C.wrongCipher)
      // a resumed TLS 1.3 session carries no certificate: check the first full handshake's
      if (!checkedCert && !reused) {
        checkedCert = true
        if (sock.getPeerCertificate().fingerprint256 !== cfg.fingerprint256) add(C.certMismatch)
      }
      sock.write(request)
    })
    sock.on("data", (d: Buffer) => {
      r.buf = r.buf.length === 0 ? d : Buffer.concat([r.buf, d])
      if (answered || !responseComplete(r)) return
      answered = true
      if (r.status !== 200) add(C.badStatus)
      if (bodyLength(r) !== cfg.expectedBody) add(C.badBody)
      add(C.done)
      if (keepAlive) {
        add(C.opened)
        held.push(sock)
        inFlight--
        next()
      } else sock.end()
    })
    sock.on("error", () => {
      failed = true
      if (!(keepAlive && Atomics.load(control, 0) === CONTROL.RELEASE)) add(C.errors)
    })
    sock.on("close", () => {
      if (keepAlive) {
        if (answered && Atomics.load(control, 0) !== CONTROL.RELEASE) add(C.closedEarly)
        if (!answered) {
          if (!failed) add(C.errors)
          inFlight--
          next()
        }
        return
      }
      if (!answered && !failed) add(C.errors)
      // Tickets arrive before the response; counted at close, by the kind of handshake they followed.
      if (tickets > 0) Atomics.add(counters, reused ? C.ticketsAfterResume : C.ticketsAfterFull, tickets)
      inFlight--
      next()
    })
  }

  const next = () => {
    if (Atomics.load(control, 0) !== CONTROL.RUN) return maybeFinish()
    if (cfg.mode === "idle") {
      if (started < cfg.count) connectOne()
      else if (inFlight === 0 && held.length + Atomics.load(counters, C.errors) >= cfg.count) {
        parentPort?.postMessage({ type: "opened" })
      }
      return
    }
    connectOne()
  }

  parentPort?.on("message", (m: { type: string }) => {
    if (m.type === "release") {
      for (const s of held) s.destroy()
      parentPort?.postMessage({ type: "released" })
    } else if (m.type === "stop") maybeFinish()
  })

  if (cfg.mode === "resumed") {
    // prime: one full handshake to get a ticket, then the resuming connections
    inFlight++
    const sock = tls.connect({ host: "127.0.0.1", port: cfg.port, secureContext, ...CONNECT_OPTIONS })
    sock.on("session", (s: Buffer) => (session = s))
    sock.on("secureConnect", () => {
      checkedCert = true
      if (sock.getPeerCertificate().fingerprint256 !== cfg.fingerprint256) add(C.certMismatch)
      sock.write(request)
    })
    sock.on("data", () => {})
    sock.on("error", () => add(C.errors))
    sock.on("close", () => {
      inFlight--
      for (let i = 0; i < cfg.concurrency; i++) next()
    })
    return
  }
  for (let i = 0; i < cfg.concurrency; i++) next()
}

if (parentPort && workerData) run(workerData as WorkerConfig)
