/**
 * HTTP/2 graceful close (RFC 9113 §6.8) when the server's event loop is late: the final GOAWAY must name every
 * stream the client sent before it saw the first GOAWAY (2^31-1). Waiting a fixed time between the two is not
 * enough: a process that was busy (or not scheduled) for longer than that runs the timer before it reads the
 * frames that arrived meanwhile, names a stale last stream id, and the client's streams past it are refused
 * (RST_STREAM REFUSED_STREAM, counted by the client as unprocessed). The engine waits for a PING's ACK instead:
 * it comes after every frame the client sent before it processed the first GOAWAY.
 * Here the client runs in a worker thread (its own event loop) and the test blocks the server's loop for 800 ms
 * right after close() begins, as a starved process would be. A request the client submitted in the very turn it
 * read the GOAWAY is never sent (its HEADERS get 'frameError', nghttp2 closes it REFUSED_STREAM for a retry): that
 * one is the client's and counted apart (`unsent`).
 */
import assert from "node:assert/strict"
import { readFileSync } from "node:fs"
import { after, before, test } from "node:test"
import { Worker } from "node:worker_threads"
import { startEchoBackend, type TestBackend } from "../../helpers/backends.ts"
import { createPki, type Pki } from "../../helpers/pki.ts"
import { type RunningPortcullis, startPortcullis } from "../../helpers/portcullis.ts"

let pki: Pki
let echo: TestBackend
let pc: RunningPortcullis

before(async () => {
  pki = await createPki()
  echo = await startEchoBackend("echo")
  const site = await pki.issue({ names: ["localhost"] })
  pc = await startPortcullis(`
listeners:
  - name: web
    address: "127.0.0.1:0"
    tls: { certificates: [{ cert: ${site.certPath}, key: ${site.keyPath} }] }
    upstream: echo
upstreams:
  echo: { backends: ["127.0.0.1:${echo.port}"] }
access_log: { enabled: false }
`)
})

after(async () => {
  await pc?.close()
  await echo?.close()
  await pki?.close()
})

/**
 * The client: one session; every 2 ms it starts a request (at most 16 in flight) until the session gets a GOAWAY,
 * so it keeps sending while the server does not read; then what is in flight finishes. It says "running" after
 * 20 answers and reports its counts when the session closed.
 */
const CLIENT = `
const http2 = require("node:http2")
const { parentPort, workerData } = require("node:worker_threads")
const session = http2.connect("https://127.0.0.1:" + workerData.port, { ca: workerData.ca, servername: "localhost" })
let ok = 0, refused = 0, unsent = 0, other = 0, inFlight = 0, said = false, gone = false
const goaways = []
const refusedIds = []
session.on("error", () => {})
session.on("goaway", (code, last) => { gone = true; goaways.push(last) })
const tick = setInterval(() => {
  if (gone || session.closed || session.destroyed) return finish()
  if (inFlight >= 16) return
  inFlight++
  const req = session.request({ ":path": "/" })
  req.resume()
  // HEADERS not sent: submitted in the turn the GOAWAY was read (the client's own refusal, never on the wire).
  let notSent = false
  req.on("frameError", (type) => { if (type === 1) notSent = true })
  req.on("response", (h) => { if (h[":status"] !== 200) other++ })
  req.on("end", () => { ok++; if (ok >= 20 && !said) { said = true; parentPort.postMessage({ type: "running" }) } })
  req.on("error", () => {
    if (req.rstCode !== http2.constants.NGHTTP2_REFUSED_STREAM) other++
    else if (notSent) unsent++
    else { refused++; refusedIds.push(req.id) }
  })
  req.on("close", () => { inFlight--; if (gone) finish() })
}, 2)
function finish() {
  clearInterval(tick)
  if (inFlight > 0) return
  // A GOAWAY already closed the session on Node's side (no callback then): report once it is destroyed.
  const report = () => parentPort.postMessage({ type: "done", ok, refused, unsent, other, goaways, refusedIds })
  if (session.destroyed) report()
  else session.once("close", report)
}
`

interface Closable {
  close(graceMs: number): Promise<void>
}

interface Report {
  type: "done"
  ok: number
  refused: number
  unsent: number
  other: number
  goaways: number[]
  refusedIds: number[]
}

test("a server busy for 800 ms after its first GOAWAY still processes every stream sent before the client saw it", async (t) => {
  const ca = readFileSync(pki.ca.certPath)
  const worker = new Worker(CLIENT, { eval: true, workerData: { port: pc.port(), ca } })
  t.after(() => worker.terminate())
  const report = new Promise<Report>((resolve, reject) => {
    worker.on("error", reject)
    worker.on("message", (m: { type: string }) => {
      if (m.type === "done") resolve(m as Report)
    })
  })
  await new Promise<void>((resolve, reject) => {
    worker.on("error", reject)
    worker.on("message", (m: { type: string }) => m.type === "running" && resolve())
  })
  // The engine's close itself: its first GOAWAY is queued and its wait begins before the loop is blocked.
  const listener = [...pc.runtime.generation!.listeners.values()][0] as unknown as { engine: Closable }
  const closed = listener.engine.close(5_000)
  // A starved process: nothing of ours runs, the client's frames queue in the socket (not a wait for an event).
  const until = Date.now() + 800
  while (Date.now() < until) {}
  await closed
  const r = await report
  t.diagnostic(JSON.stringify(r))
  assert.ok(r.ok > 20, JSON.stringify(r))
  assert.ok(r.goaways.length >= 1, `the client got GOAWAY: ${JSON.stringify(r)}`)
  assert.equal(r.other, 0, JSON.stringify(r))
  assert.equal(r.refused, 0, `no stream the client sent was refused: ${JSON.stringify(r)}`)
})
