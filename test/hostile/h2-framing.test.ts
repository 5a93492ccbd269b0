/**
 * Issue 14, finding 9: HTTP/2 protocol errors that Node's nghttp2 leaves unanswered or answers wrongly, answered as
 * RFC 9113 says (src/proxy/http/h2-guard.ts). Each case is sent as raw frames; the test checks the frame the server
 * sends back (type and error code) and, where the RFC keeps the connection, that a request on it still succeeds.
 */
import assert from "node:assert/strict"
import { after, before, test } from "node:test"
import { startEchoBackend, type TestBackend } from "../helpers/backends.ts"
import {
  connectRawH2,
  ERROR,
  FLAG,
  FRAME,
  frame,
  goawayOf,
  headerBlock,
  type RawH2,
  requestHeaders,
  responseStatus,
  u32,
} from "../helpers/h2-frames.ts"
import { type ProxyProcess, spawnProxy } from "./harness.ts"

let backend: TestBackend
let proxy: ProxyProcess

before(async () => {
  backend = await startEchoBackend("echo")
  proxy = await spawnProxy("[{ upstream: echo }]", { echo: backend.port })
})

after(async () => {
  await proxy?.stop()
  await backend?.close()
})

const get = (id: number, path = "/") =>
  frame(FRAME.HEADERS, FLAG.END_HEADERS | FLAG.END_STREAM, id, headerBlock(requestHeaders("GET", path, "localhost")))
const post = (id: number) =>
  frame(FRAME.HEADERS, FLAG.END_HEADERS, id, headerBlock(requestHeaders("POST", "/upload", "localhost")))

/** response waits for the end of the response on stream id (DATA or HEADERS with END_STREAM). */
function response(h2: RawH2, id: number) {
  return h2.waitFor((f) => f.streamId === id && (f.type === FRAME.DATA || f.type === FRAME.HEADERS) && !!(f.flags & 1))
}

/** stillServes checks that a GET on a new stream of the same connection gets a 200. */
async function stillServes(h2: RawH2, id: number): Promise<void> {
  h2.send(get(id, "/after"))
  const head = await h2.waitFor((f) => f.type === FRAME.HEADERS && f.streamId === id)
  assert.ok(head, `no response on stream ${id}: the connection is not usable`)
  assert.equal(responseStatus(head.payload), 200)
  assert.ok(!h2.frames.some((f) => f.type === FRAME.GOAWAY), "no GOAWAY")
}

async function rstOn(h2: RawH2, id: number): Promise<number | undefined> {
  const rst = await h2.waitFor((f) => f.type === FRAME.RST_STREAM && f.streamId === id)
  return rst?.payload.readUInt32BE(0)
}

async function goaway(h2: RawH2): Promise<number | undefined> {
  const f = await h2.waitFor((x) => x.type === FRAME.GOAWAY)
  return f && goawayOf(f.payload).code
}

test("DATA on a stream the client reset: RST_STREAM STREAM_CLOSED, the connection stays", async () => {
  const h2 = await connectRawH2(proxy.port)
  h2.send(post(1), frame(FRAME.RST_STREAM, 0, 1, u32(ERROR.CANCEL)))
  h2.send(frame(FRAME.DATA, 0, 1, Buffer.from("late")))
  assert.equal(await rstOn(h2, 1), ERROR.STREAM_CLOSED)
  await stillServes(h2, 3)
  h2.close()
})

test("HEADERS on a stream the client reset: RST_STREAM STREAM_CLOSED, the connection stays", async () => {
  const h2 = await connectRawH2(proxy.port)
  h2.send(post(1), frame(FRAME.RST_STREAM, 0, 1, u32(ERROR.CANCEL)))
  h2.send(get(1))
  assert.equal(await rstOn(h2, 1), ERROR.STREAM_CLOSED)
  await stillServes(h2, 3)
  h2.close()
})

test("DATA on a stream the client closed (END_STREAM, answered): GOAWAY STREAM_CLOSED", async () => {
  const h2 = await connectRawH2(proxy.port)
  h2.send(get(1))
  assert.ok(await response(h2, 1))
  h2.send(frame(FRAME.DATA, 0, 1, Buffer.from("late")))
  assert.equal(await goaway(h2), ERROR.STREAM_CLOSED)
  h2.close()
})

test("HEADERS on a stream the client closed (END_STREAM, answered): GOAWAY STREAM_CLOSED", async () => {
  const h2 = await connectRawH2(proxy.port)
  h2.send(get(1))
  assert.ok(await response(h2, 1))
  h2.send(get(1))
  assert.equal(await goaway(h2), ERROR.STREAM_CLOSED)
  h2.close()
})

test("a stream id lower than one already used: GOAWAY PROTOCOL_ERROR", async () => {
  const h2 = await connectRawH2(proxy.port)
  h2.send(get(5))
  assert.ok(await response(h2, 5))
  h2.send(get(3))
  assert.equal(await goaway(h2), ERROR.PROTOCOL_ERROR)
  assert.ok(!h2.frames.some((f) => f.type === FRAME.HEADERS && f.streamId === 3), "stream 3 is not served")
  h2.close()
})

test("PRIORITY that depends on its own stream: RST_STREAM PROTOCOL_ERROR, the connection stays", async () => {
  const h2 = await connectRawH2(proxy.port)
  h2.send(post(1), frame(FRAME.PRIORITY, 0, 1, Buffer.concat([u32(1), Buffer.from([15])])))
  assert.equal(await rstOn(h2, 1), ERROR.PROTOCOL_ERROR)
  await stillServes(h2, 3)
  h2.close()
})

test("PRIORITY on stream 0: GOAWAY PROTOCOL_ERROR", async () => {
  const h2 = await connectRawH2(proxy.port)
  h2.send(frame(FRAME.PRIORITY, 0, 0, Buffer.concat([u32(1), Buffer.from([15])])))
  assert.equal(await goaway(h2), ERROR.PROTOCOL_ERROR)
  h2.close()
})

test("an unsolicited PING ACK is ignored: no answer, the connection stays, a PING is still answered", async () => {
  const h2 = await connectRawH2(proxy.port)
  h2.send(frame(FRAME.PING, FLAG.ACK, 0, Buffer.from("unasked!")))
  await stillServes(h2, 1)
  h2.send(frame(FRAME.PING, 0, 0, Buffer.from("pingpong")))
  const ack = await h2.waitFor((f) => f.type === FRAME.PING && !!(f.flags & FLAG.ACK))
  assert.equal(ack?.payload.toString(), "pingpong")
  assert.equal(h2.frames.filter((f) => f.type === FRAME.PING).length, 1, "only the real PING is answered")
  h2.close()
})

test("WINDOW_UPDATE past 2^31-1 on a stream: RST_STREAM FLOW_CONTROL_ERROR, the connection stays", async () => {
  const h2 = await connectRawH2(proxy.port)
  h2.send(post(1), frame(FRAME.WINDOW_UPDATE, 0, 1, u32(0x7fffffff)))
  assert.equal(await rstOn(h2, 1), ERROR.FLOW_CONTROL_ERROR)
  await stillServes(h2, 3)
  h2.close()
})

test("WINDOW_UPDATE past 2^31-1 on the connection: GOAWAY FLOW_CONTROL_ERROR (RFC 9113 §6.9.1)", async () => {
  const h2 = await connectRawH2(proxy.port)
  h2.send(frame(FRAME.WINDOW_UPDATE, 0, 0, u32(0x7fffffff)))
  assert.equal(await goaway(h2), ERROR.FLOW_CONTROL_ERROR)
  h2.close()
})

test("WINDOW_UPDATEs that refill what DATA used keep a stream's window at 2^31-1 without a reset", async () => {
  const h2 = await connectRawH2(proxy.port)
  // The stream's window goes to exactly 2^31-1; every DATA byte the server sends is then given back.
  h2.send(
    frame(FRAME.WINDOW_UPDATE, 0, 0, u32(10 * 1024 * 1024)),
    get(1, "/bytes?n=300000"),
    frame(FRAME.WINDOW_UPDATE, 0, 1, u32(0x7fffffff - 65_535)),
  )
  let given = 0
  let received = 0
  const deadline = Date.now() + 10_000
  while (Date.now() < deadline) {
    const data = h2.frames.filter((f) => f.type === FRAME.DATA && f.streamId === 1)
    received = data.reduce((n, f) => n + f.payload.length, 0)
    if (received > given) {
      h2.send(frame(FRAME.WINDOW_UPDATE, 0, 1, u32(received - given)))
      given = received
    }
    if (data.some((f) => f.flags & FLAG.END_STREAM)) break
    await new Promise((r) => setTimeout(r, 10))
  }
  assert.equal(received, 300_000)
  assert.ok(!h2.frames.some((f) => f.type === FRAME.RST_STREAM || f.type === FRAME.GOAWAY))
  await stillServes(h2, 3)
  h2.close()
})
