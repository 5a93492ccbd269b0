/**
 * HTTP/2 floods (issue 14): rapid reset (HEADERS + RST_STREAM storms, CVE-2023-44487), CONTINUATION without
 * END_HEADERS (CVE-2024-27983), SETTINGS, PING, empty DATA frames (CVE-2019-9518) and WINDOW_UPDATE floods, each on
 * one connection against a Portcullis process with the defaults. For each: the attacker's connection is closed
 * within CLOSE_BOUND_MS, the process's RSS stays within RSS_GROWTH_MIB of what it was, and a bystander doing ordinary
 * HTTP/1.1 and HTTP/2 requests meanwhile has no failure and a p99 under latencyBound(its baseline, measured first).
 */
import assert from "node:assert/strict"
import { after, before, test } from "node:test"
import { connectRawH2, ERROR, FLAG, FRAME, frame, headerBlock, requestHeaders, u32 } from "../helpers/h2-frames.ts"
import { floodH2, latencyBound, measureBaseline, p99, startBystander, watchRss } from "./flood.ts"
import { type ProxyProcess, type RawBackend, rssMiB, spawnProxy, startRawBackend } from "./harness.ts"

/** The attacker gives up after this long; the server must have closed the connection well before. */
const FLOOD_MAX_MS = 10_000
const CLOSE_BOUND_MS = 5_000
const RSS_GROWTH_MIB = 64

let backend: RawBackend
let proxy: ProxyProcess

before(async () => {
  backend = await startRawBackend()
  proxy = await spawnProxy("[{ upstream: app }]", { app: backend.port })
})
after(async () => {
  await proxy?.stop()
  await backend?.close()
})

const GET = headerBlock(requestHeaders("GET", "/", "localhost"))
const POST = headerBlock(requestHeaders("POST", "/", "localhost"))

interface Flood {
  name: string
  batch: (first: number, size: number) => Buffer
  /**
   * The GOAWAY code when one arrives and the close is Portcullis's own (h2-guard.ts) rather than nghttp2's. It often
   * does not arrive: the server closes with the attacker's unread frames in its receive buffer, so the kernel sends
   * RST, and the client's kernel drops what the client had not read yet.
   */
  goaway?: number
}

/** repeat builds a batch from one frame per index, with an optional opening frame before index 0. */
function repeat(make: (n: number) => Buffer, opening?: Buffer): Flood["batch"] {
  return (first, size) => {
    const parts: Buffer[] = []
    if (first === 0 && opening) parts.push(opening)
    for (let n = first; n < first + size; n++) parts.push(make(n))
    return Buffer.concat(parts)
  }
}

const FLOODS: Flood[] = [
  {
    name: "rapid reset (HEADERS then RST_STREAM CANCEL, new stream each time)",
    batch: repeat((n) =>
      Buffer.concat([
        frame(FRAME.HEADERS, FLAG.END_STREAM | FLAG.END_HEADERS, 2 * n + 1, GET),
        frame(FRAME.RST_STREAM, 0, 2 * n + 1, u32(ERROR.CANCEL)),
      ]),
    ),
  },
  {
    name: "CONTINUATION flood (a header block that never ends)",
    batch: repeat(
      (n) => frame(FRAME.CONTINUATION, 0, 1, headerBlock([[`x-flood-${n}`, "y"]])),
      frame(FRAME.HEADERS, FLAG.END_STREAM, 1, GET),
    ),
  },
  {
    name: "SETTINGS flood",
    batch: repeat(() => frame(FRAME.SETTINGS, 0, 0, Buffer.from([0, 3, 0, 0, 0, 100]))),
    goaway: ERROR.ENHANCE_YOUR_CALM,
  },
  {
    name: "PING flood",
    batch: repeat((n) => frame(FRAME.PING, 0, 0, Buffer.concat([u32(0), u32(n)]))),
    goaway: ERROR.ENHANCE_YOUR_CALM,
  },
  {
    name: "empty DATA frames flood",
    batch: repeat(() => frame(FRAME.DATA, 0, 1), frame(FRAME.HEADERS, FLAG.END_HEADERS, 1, POST)),
  },
  {
    name: "WINDOW_UPDATE flood (connection window, increment 1)",
    batch: repeat(() => frame(FRAME.WINDOW_UPDATE, 0, 0, u32(1))),
    goaway: ERROR.ENHANCE_YOUR_CALM,
  },
  {
    name: "WINDOW_UPDATE flood (on an open stream, increment 1)",
    batch: repeat(() => frame(FRAME.WINDOW_UPDATE, 0, 1, u32(1)), frame(FRAME.HEADERS, FLAG.END_HEADERS, 1, POST)),
    goaway: ERROR.ENHANCE_YOUR_CALM,
  },
]

for (const flood of FLOODS) {
  test(`${flood.name}: the attacker is closed, RSS stays bounded, a bystander keeps its latency`, async () => {
    const baseline = await measureBaseline(proxy.port)
    const seenBefore = backend.requests.length
    const rssBefore = rssMiB(proxy.pid)
    const rss = watchRss(proxy.pid)
    const bystander = startBystander(proxy.port)
    const result = await floodH2(proxy.port, flood.batch, FLOOD_MAX_MS)
    // The bystander goes on a little after the close, so what the flood left behind (buffers, GC) counts too.
    await new Promise((r) => setTimeout(r, 500))
    const { latencies, failures } = await bystander.stop()
    const rssMax = rss.stop()
    const figures = `closed after ${result.closedAfter} ms, ${result.sent} frames, GOAWAY ${result.goaway}; RSS ${rssBefore.toFixed(0)} -> max ${rssMax.toFixed(0)} MiB; bystander ${latencies.length} requests, p99 ${p99(latencies).toFixed(1)} ms (baseline ${baseline.p99.toFixed(1)} ms over ${baseline.count})`
    console.log(
      `${flood.name}: ${figures}; backend got ${backend.requests.length - seenBefore}, conns ${backend.received.length}`,
    )
    assert.equal(proxy.pc.child.exitCode, null, "Portcullis is still running")
    assert.ok(result.closedAfter !== undefined && result.closedAfter <= CLOSE_BOUND_MS, `attacker closed: ${figures}`)
    if (flood.goaway !== undefined && result.goaway !== undefined) assert.equal(result.goaway, flood.goaway, figures)
    assert.ok(rssMax - rssBefore <= RSS_GROWTH_MIB, `RSS bounded: ${figures}`)
    assert.deepEqual(failures, [], figures)
    assert.ok(p99(latencies) <= latencyBound(baseline.p99), `bystander p99: ${figures}`)
  })
}

test("not a flood: a download whose client sends two WINDOW_UPDATEs for every DATA frame is served whole", async () => {
  const size = 16 * 2 ** 20
  const body = Buffer.alloc(size, 0x78)
  const respond = backend.respond
  backend.respond = (req) =>
    req.head.startsWith("GET /big ")
      ? Buffer.concat([Buffer.from(`HTTP/1.1 200 OK\r\ncontent-length: ${size}\r\n\r\n`), body])
      : respond(req)
  const h2 = await connectRawH2(proxy.port)
  try {
    let received = 0
    let updates = 0
    let seen = 0
    const done = new Promise<void>((resolve) => {
      // Runs after connectRawH2's own 'data' listener has parsed the frames of this chunk.
      h2.socket.on("data", () => {
        for (; seen < h2.frames.length; seen++) {
          const f = h2.frames[seen]!
          if (f.type !== FRAME.DATA) continue
          received += f.payload.length
          if (f.payload.length > 0) {
            // As some clients do: give back each frame's bytes at once, on the stream and on the connection.
            h2.send(
              frame(FRAME.WINDOW_UPDATE, 0, 1, u32(f.payload.length)),
              frame(FRAME.WINDOW_UPDATE, 0, 0, u32(f.payload.length)),
            )
            updates += 2
          }
          if (f.flags & FLAG.END_STREAM) resolve()
        }
      })
      void h2.closed.then(() => resolve())
    })
    h2.send(
      frame(
        FRAME.HEADERS,
        FLAG.END_STREAM | FLAG.END_HEADERS,
        1,
        headerBlock(requestHeaders("GET", "/big", "localhost")),
      ),
    )
    await Promise.race([done, new Promise((r) => setTimeout(r, 60_000))])
    console.log(`download: ${received} bytes, ${updates} WINDOW_UPDATEs sent`)
    assert.equal(received, size, `the whole body arrived (${updates} WINDOW_UPDATEs sent)`)
    assert.ok(updates > 2_000, `more WINDOW_UPDATEs than the budget's burst: ${updates}`)
    assert.ok(!h2.frames.some((f) => f.type === FRAME.GOAWAY), "no GOAWAY")
  } finally {
    h2.close()
    backend.respond = respond
  }
})
