/**
 * HTTP/1.1 fuzzer (issue 14): request heads and bodies mutated from valid templates (bytes flipped, inserted and
 * deleted; lines duplicated, dropped and swapped; tricky framing and Host fields added; cut short) against an
 * in-process Portcullis. Nothing may escape as an uncaught exception or unhandled rejection; every answer is a
 * well-formed HTTP/1.1 response or a closed connection; afterwards a normal request succeeds and RSS is bounded.
 * The seed is printed; PC_FUZZ_SEED repeats a run.
 */
import assert from "node:assert/strict"
import { test } from "node:test"
import { h2request, request } from "../helpers/clients.ts"
import { clientConnections, describeTrapped, fuzzSeed, memory, type Rng, runCases, startFuzzTarget } from "./fuzz.ts"
import { rawTls } from "./harness.ts"

const CASES = Number(process.env.PC_FUZZ_CASES ?? 2_000)

const TEMPLATES = [
  "GET /echo HTTP/1.1\r\nHost: localhost\r\nAccept: */*\r\nConnection: close\r\n\r\n",
  "POST /upload HTTP/1.1\r\nHost: localhost\r\nContent-Length: 11\r\nConnection: close\r\n\r\nhello world",
  "POST /echo HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
  "GET /bytes?n=5000 HTTP/1.1\r\nHost: localhost\r\n\r\nGET /echo HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
  "HEAD / HTTP/1.0\r\n\r\n",
  "GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
]
const FIELDS = [
  "Transfer-Encoding: chunked",
  "Transfer-Encoding: xchunked",
  "Transfer-Encoding: chunked, identity",
  "Transfer-Encoding:\tchunked",
  " Transfer-Encoding: chunked",
  "Content-Length: 5",
  "Content-Length: +5",
  "Content-Length: -1",
  "Content-Length: 5, 5",
  "Content-Length: 99999999999999999999",
  "Host: other.example",
  "Host: a b",
  "Expect: 100-continue",
  "Connection: keep-alive, Upgrade",
  "X-Fold: a\r\n b",
  "X-Nul: a\0b",
  `X-Long: ${"a".repeat(9000)}`,
]
const NOISE = ["\r", "\n", "\0", " ", "\t", ":", ",", ";", "\x7f", "\xff", "0", "F", "-", "+", "/", "?", "#", "%"]

/** mutate applies a few random mutations to a request. */
function mutate(rng: Rng, input: string): string {
  let s = input
  for (let n = 1 + rng.int(4); n > 0; n--) {
    const at = rng.int(s.length + 1)
    switch (rng.int(8)) {
      case 0: // flip a byte
        s = s.slice(0, at) + String.fromCharCode(rng.int(256)) + s.slice(at + 1)
        break
      case 1: // insert noise
        s = s.slice(0, at) + rng.pick(NOISE) + s.slice(at)
        break
      case 2: // delete a run
        s = s.slice(0, at) + s.slice(at + 1 + rng.int(8))
        break
      case 3: {
        // add a tricky field after the request line
        const eol = s.indexOf("\r\n")
        if (eol !== -1) s = `${s.slice(0, eol + 2)}${rng.pick(FIELDS)}\r\n${s.slice(eol + 2)}`
        break
      }
      case 4: {
        // duplicate, drop or swap head lines
        const end = s.indexOf("\r\n\r\n")
        if (end === -1) break
        const lines = s.slice(0, end).split("\r\n")
        const i = 1 + rng.int(Math.max(1, lines.length - 1))
        const j = 1 + rng.int(Math.max(1, lines.length - 1))
        const op = rng.int(3)
        if (op === 0 && lines[i] !== undefined) lines.splice(i, 0, lines[i]!)
        else if (op === 1) lines.splice(i, 1)
        else if (lines[i] !== undefined && lines[j] !== undefined) [lines[i], lines[j]] = [lines[j]!, lines[i]!]
        s = lines.join("\r\n") + s.slice(end)
        break
      }
      case 5: // cut short
        s = s.slice(0, at)
        break
      case 6: // change the method or version
        s = s.replace(/^[A-Z]+/, rng.pick(["GET", "POST", "PUT", "CONNECT", "OPTIONS", "TRACE", "PRI", "G ET", "get"]))
        if (rng.chance(0.3)) s = s.replace(/HTTP\/1\.[01]/, rng.pick(["HTTP/1.0", "HTTP/1.2", "HTTP/2.0", "HTTP/1.1 "]))
        break
      default: // replace the target
        s = s.replace(
          / \S+ HTTP/,
          ` ${rng.pick(["*", "http://localhost/x", "https://a@b/", "//x", "/a b", "/%00", "x", "/?#"])} HTTP`,
        )
    }
  }
  return s
}

/** wellFormed: what came back is nothing, or starts with a status line (what follows is the backend's bytes). */
function wellFormed(text: string): boolean {
  return text === "" || /^HTTP\/1\.1 [1-5]\d\d /.test(text)
}

test(`HTTP/1.1 fuzzer: ${CASES} mutated requests, no uncaught error, a request after succeeds`, async () => {
  const seed = fuzzSeed("h1 fuzzer")
  const target = await startFuzzTarget()
  try {
    const tls = { rejectUnauthorized: false }
    assert.equal((await request({ port: target.port, path: "/warm", tlsOptions: tls })).status, 200)
    const before = memory()
    await runCases(target, seed, CASES, 16, async (rng, index) => {
      const wire = mutate(rng, rng.pick(TEMPLATES))
      const client = await rawTls(target.port)
      client.socket.setNoDelay(true)
      if (rng.chance(0.5)) client.socket.write(Buffer.from(wire, "latin1"))
      else {
        const cut = rng.int(wire.length + 1)
        client.socket.write(Buffer.from(wire.slice(0, cut), "latin1"))
        client.socket.write(Buffer.from(wire.slice(cut), "latin1"))
      }
      // End our side: the server answers what it has, or finds the request incomplete, and closes.
      client.socket.end()
      const timer = setTimeout(() => client.socket.destroy(), 2_000)
      await client.closed
      clearTimeout(timer)
      assert.ok(wellFormed(client.text()), `case ${index}: ${JSON.stringify(client.text().slice(0, 120))}`)
    })
    assert.deepEqual(target.trapped, [], describeTrapped(seed, target.trapped))
    const after1 = await request({ port: target.port, path: "/after", tlsOptions: tls })
    const after2 = await h2request({ port: target.port, path: "/after", tlsOptions: tls })
    assert.equal(after1.status, 200)
    assert.equal(after2.status, 200)
    // Every fuzz connection is gone (none held by a stuck session), and what they used is freed.
    const deadline = Date.now() + 10_000
    while (clientConnections(target) > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50))
    assert.equal(clientConnections(target), 0, "client connections left open")
    const now = memory()
    console.log(
      `h1 fuzzer: ${CASES} cases, heap ${before.heap.toFixed(1)} -> ${now.heap.toFixed(1)} MiB, RSS ${before.rss.toFixed(1)} -> ${now.rss.toFixed(1)} MiB`,
    )
    // In-process: the figures include the fuzzing client; RSS also keeps what V8 and OpenSSL have not returned.
    assert.ok(now.heap - before.heap < 16, `heap grew ${(now.heap - before.heap).toFixed(1)} MiB (seed ${seed})`)
    assert.ok(now.rss - before.rss < 192, `RSS grew ${(now.rss - before.rss).toFixed(1)} MiB (seed ${seed})`)
  } finally {
    await target.close()
  }
})
