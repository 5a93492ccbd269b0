/** Bodies stream through with backpressure: 100 MiB each way must not grow the proxy's memory. */
import assert from "node:assert/strict"
import { readFileSync, writeFileSync } from "node:fs"
import https from "node:https"
import { Readable } from "node:stream"
import { after, before, test } from "node:test"
import { startEchoBackend, type TestBackend } from "../../helpers/backends.ts"
import { createPki, type Pki } from "../../helpers/pki.ts"
import { type ChildPortcullis, runningPorts, spawnPortcullis, writeTemp } from "../../helpers/portcullis.ts"

const SIZE = 100 * 1024 * 1024
/**
 * Growth of the proxy's peak RSS allowed while 100 MiB passes: buffers and garbage not yet collected (40-52 MiB
 * measured), not bodies. The byte count below is the sharper check of backpressure.
 */
const MAX_GROWTH = 64 * 1024 * 1024
/**
 * The same for the upload. It measured +65-71 MiB (undici for every backend: 65; with the lean client for plain
 * backends: 70) and +12 MiB with --max-semi-space-size=1: the growth is V8 freeing socket-read ArrayBuffers at its
 * next scavenge, not body bytes held (MAX_HELD: while the backend reads slowly, the processes hold 0.3 MiB of the
 * body). So the bound is looser here and the byte count is the check of backpressure.
 */
const MAX_UPLOAD_GROWTH = 96 * 1024 * 1024
/**
 * How much of a body the processes (client, proxy, backend) may hold between them when the reader stops: their
 * stream buffers. Measured 0.3 MiB for the upload, against 4-22 MiB in kernel socket buffers (loopback autotunes
 * receive buffers up to tcp_rmem's 32 MiB, which is why the upload checks this and not MAX_AHEAD).
 */
const MAX_HELD = 2 * 1024 * 1024
/**
 * How far a backend may run ahead of a paused client: the buffers between them, not the body.
 */
const MAX_AHEAD = 24 * 1024 * 1024

let pki: Pki
let backend: TestBackend
let pc: ChildPortcullis
let port: number

/** rssOf reads a process's current and peak resident memory from /proc. */
function rssOf(pid: number): { rss: number; peak: number } {
  const status = readFileSync(`/proc/${pid}/status`, "utf8")
  const kb = (field: string) => Number(new RegExp(`${field}:\\s+(\\d+) kB`).exec(status)?.[1] ?? 0) * 1024
  return { rss: kb("VmRSS"), peak: kb("VmHWM") }
}

/**
 * kernelQueued sums the bytes the kernel holds (send queue + receive queue, /proc/net/tcp) on established loopback
 * connections that touch one of ports: what sits in socket buffers between the client and the backend.
 */
function kernelQueued(ports: number[]): number {
  const hex = new Set(ports.map((p) => p.toString(16).toUpperCase().padStart(4, "0")))
  let total = 0
  for (const line of readFileSync("/proc/net/tcp", "utf8").split("\n").slice(1)) {
    const f = line.trim().split(/\s+/)
    if (f.length < 5 || f[3] !== "01") continue // 01: ESTABLISHED
    const local = f[1]!.split(":")[1]!
    const remote = f[2]!.split(":")[1]!
    if (!hex.has(local) && !hex.has(remote)) continue
    const [tx, rx] = f[4]!.split(":")
    total += Number.parseInt(tx!, 16) + Number.parseInt(rx!, 16)
  }
  return total
}

/** resetPeak clears VmHWM so each test measures its own peak (Linux: clear_refs 5). */
function resetPeak(pid: number): void {
  writeFileSync(`/proc/${pid}/clear_refs`, "5")
}

before(async () => {
  pki = await createPki()
  const site = await pki.issue({ names: ["localhost"] })
  backend = await startEchoBackend("bulk")
  const config = writeTemp(
    pki.dir,
    "stream.yaml",
    `listeners:
  - name: web
    address: 127.0.0.1:0
    tls: { certificates: [{ cert: ${site.certPath}, key: ${site.keyPath} }] }
    routes: [{ upstream: bulk }]
upstreams:
  bulk: { backends: ["127.0.0.1:${backend.port}"] }
access_log: { enabled: false }
`,
  )
  pc = spawnPortcullis(["--config", config])
  port = (await runningPorts(pc)).ports["web"]!
})

after(async () => {
  await pc?.stop()
  await backend?.close()
  await pki?.close()
})

/** warm sends a few requests so that the baseline includes a warmed-up proxy. */
async function warm(): Promise<void> {
  for (let i = 0; i < 5; i++) await download(1024 * 1024, false)
}

/** What a slow download saw: bytes received, and the most the backend was ever ahead of the client. */
interface DownloadResult {
  received: number
  maxAhead: number
}

/**
 * download reads n bytes through the proxy. A slow reader stops for 300 ms after every 16 MiB; at the end of each
 * stop it records how far the backend has got ahead of it: without backpressure the proxy would read on, and the
 * backend would be ~all of the body ahead; with it, only the socket and stream buffers in between.
 */
function download(n: number, slow: boolean): Promise<DownloadResult> {
  return new Promise((resolve, reject) => {
    let maxAhead = 0
    const sentBefore = backend.bytesSent()
    const req = https.get(
      { host: "127.0.0.1", port, path: `/bytes?n=${n}`, servername: "localhost", ca: pki.ca.cert, agent: false },
      (res) => {
        let received = 0
        res.on("data", (c: Buffer) => {
          received += c.length
          // A slow reader: pause now and then so backpressure must hold the backend back.
          if (slow && received % (16 * 1024 * 1024) < c.length) {
            res.pause()
            setTimeout(() => {
              maxAhead = Math.max(maxAhead, backend.bytesSent() - sentBefore - received)
              res.resume()
            }, 300)
          }
        })
        res.on("end", () => resolve({ received, maxAhead }))
        res.on("error", reject)
      },
    )
    req.on("error", reject)
  })
}

test("a 100 MiB download passes with bounded proxy memory", async () => {
  await warm()
  resetPeak(pc.child.pid!)
  const before = rssOf(pc.child.pid!)
  const { received, maxAhead } = await download(SIZE, true)
  const afterMem = rssOf(pc.child.pid!)
  assert.equal(received, SIZE)
  // Loopback socket buffers on both hops plus the proxy's stream buffers; a proxy that ignored backpressure
  // would let the backend run ~all of the remaining body ahead during each stop.
  assert.ok(maxAhead < MAX_AHEAD, `the backend got ${(maxAhead / 1048576).toFixed(1)} MiB ahead of a paused client`)
  assert.ok(afterMem.peak - before.rss < MAX_GROWTH, `peak RSS grew by ${(afterMem.peak - before.rss) / 1048576} MiB`)
})

test("a 100 MiB upload passes with bounded proxy memory", async () => {
  await warm()
  resetPeak(pc.child.pid!)
  const before = rssOf(pc.child.pid!)
  const chunk = Buffer.alloc(64 * 1024, "u")
  let sent = 0
  const body = new Readable({
    read() {
      if (sent >= SIZE) this.push(null)
      else {
        sent += chunk.length
        this.push(chunk)
      }
    },
  })
  // The backend reads slowly: it stops for 300 ms after every 16 MiB; at the end of each stop, how far has the
  // client's body run ahead of what the backend received, and how much of that is not in kernel socket buffers
  // (held by the client, the proxy or the backend process)? With backpressure, only stream buffers.
  let maxAhead = 0
  let maxHeld = 0
  backend.onUploadStop = (received) => {
    const ahead = sent - received
    maxAhead = Math.max(maxAhead, ahead)
    maxHeld = Math.max(maxHeld, ahead - kernelQueued([port, backend.port]))
  }
  const reply = await new Promise<string>((resolve, reject) => {
    const req = https.request(
      {
        host: "127.0.0.1",
        port,
        path: `/upload?stop=${16 * 1024 * 1024}`,
        method: "POST",
        servername: "localhost",
        ca: pki.ca.cert,
        agent: false,
        headers: { "content-length": SIZE },
      },
      (res) => {
        let text = ""
        res.on("data", (c: Buffer) => {
          text += c.toString()
        })
        res.on("end", () => resolve(text))
      },
    )
    req.on("error", reject)
    body.pipe(req)
  })
  backend.onUploadStop = undefined
  const afterMem = rssOf(pc.child.pid!)
  assert.deepEqual(JSON.parse(reply), { received: SIZE })
  assert.ok(maxAhead > 0, "the backend stopped while the client sent")
  const mib = (n: number) => (n / 1048576).toFixed(1)
  assert.ok(
    maxHeld < MAX_HELD,
    `the client got ${mib(maxAhead)} MiB ahead of a paused backend, ${mib(maxHeld)} MiB of it outside socket buffers`,
  )
  assert.ok(
    afterMem.peak - before.rss < MAX_UPLOAD_GROWTH,
    `peak RSS grew by ${(afterMem.peak - before.rss) / 1048576} MiB`,
  )
})
