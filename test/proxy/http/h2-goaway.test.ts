/**
 * HTTP/2 graceful close (RFC 9113 §6.8) when the server's event loop is late: the final GOAWAY must name every
 * stream the client sent before it saw the first GOAWAY (2^31-1). Waiting a fixed time between the two is not
 * enough: a process that was busy (or not scheduled) for longer than that runs the timer before it reads the
 * frames that arrived meanwhile, names a stale last stream id, and the client's streams past it are refused
 * (RST_STREAM REFUSED_STREAM, counted by the client as unprocessed). The engine waits for a PING's ACK instead:
 * it comes after every frame the client sent before it processed the first GOAWAY.
 * Here a raw client (test/helpers/h2-frames.ts) stops reading once its first request is answered, so it has not
 * seen the first GOAWAY when it sends 20 more streams, and the test blocks the server's loop for 800 ms right after
 * close() begins, as a starved process would be. (Node's client in a worker thread, which this test used before,
 * sent more streams only while the GOAWAY was on the wire, and on a fast machine sometimes none: 5 runs in 6 then
 * had nothing to check. Both a session.goaway() first GOAWAY and a fixed 100 ms wait fail this test.)
 */
import assert from "node:assert/strict"
import { after, before, test } from "node:test"
import { startEchoBackend, type TestBackend } from "../../helpers/backends.ts"
import {
  connectRawH2,
  ERROR,
  FLAG,
  FRAME,
  frame,
  goawayOf,
  headerBlock,
  requestHeaders,
} from "../../helpers/h2-frames.ts"
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

interface Closable {
  close(graceMs: number): Promise<void>
}

const STREAMS_AFTER_NOTICE = 20

test("a server busy for 800 ms after its first GOAWAY still processes every stream sent before the client saw it", async (t) => {
  const h2 = await connectRawH2(pc.port())
  t.after(() => h2.close())
  // SETTINGS ACK for the server's SETTINGS; one request answered: the session is up.
  h2.send(frame(FRAME.SETTINGS, FLAG.ACK, 0))
  const request = (id: number) =>
    frame(FRAME.HEADERS, FLAG.END_HEADERS | FLAG.END_STREAM, id, headerBlock(requestHeaders("GET", "/", "localhost")))
  h2.send(request(1))
  assert.ok(await h2.waitFor((f) => f.type === FRAME.HEADERS && f.streamId === 1), "stream 1 answered")
  // From here the client reads nothing (it has not seen what the server sends next), as a client whose GOAWAY is
  // still on the wire: frames it gets wait in its socket, unparsed, and its PING is not acknowledged yet.
  h2.socket.pause()
  const seen = h2.frames.length
  // The engine's close: its first GOAWAY (2^31-1) and its PING go out now...
  const listener = [...pc.runtime.generation!.listeners.values()][0] as unknown as { engine: Closable }
  const closed = listener.engine.close(5_000)
  // ...and the client, not having read them, sends more streams, which reach the server after its first GOAWAY.
  const ids = Array.from({ length: STREAMS_AFTER_NOTICE }, (_, i) => 3 + 2 * i)
  h2.send(...ids.map(request))
  // A starved process: nothing of ours runs for 800 ms, the streams queue in the socket (timers would run before
  // they are read: a fixed wait before the final GOAWAY would name a stale last stream id here).
  const until = Date.now() + 800
  while (Date.now() < until) {}
  await new Promise((r) => setTimeout(r, 300))
  // The client reads again, and acknowledges the server's PING as any client does.
  h2.socket.resume()
  const ping = await h2.waitFor((f) => f.type === FRAME.PING && (f.flags & FLAG.ACK) === 0)
  assert.ok(ping, "the server sent a PING after its first GOAWAY")
  h2.send(frame(FRAME.PING, FLAG.ACK, 0, ping.payload))
  await closed
  await h2.closed
  const after = h2.frames.slice(seen)
  const goaways = after.filter((f) => f.type === FRAME.GOAWAY).map((f) => goawayOf(f.payload))
  const answered = new Set(after.filter((f) => f.type === FRAME.HEADERS).map((f) => f.streamId))
  const reset = after.filter((f) => f.type === FRAME.RST_STREAM).map((f) => f.streamId)
  const report = JSON.stringify({ goaways, answered: [...answered], reset })
  t.diagnostic(report)
  assert.deepEqual(goaways[0], { lastStreamId: 2 ** 31 - 1, code: ERROR.NO_ERROR }, `the first GOAWAY: ${report}`)
  assert.deepEqual(goaways.at(-1), { lastStreamId: ids.at(-1), code: ERROR.NO_ERROR }, `the final GOAWAY: ${report}`)
  assert.deepEqual(reset, [], `no stream was reset: ${report}`)
  assert.deepEqual(
    [...answered].sort((x, y) => x - y),
    ids,
    `every stream sent after the first GOAWAY answered: ${report}`,
  )
})
