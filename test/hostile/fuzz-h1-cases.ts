/** The HTTP/1.1 fuzzer's cases (fuzz-h1.test.ts, and npm run soak in the background): one mutated request each. */
import assert from "node:assert/strict"
import type { Rng } from "./fuzz.ts"
import { rawTls } from "./harness.ts"

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

/** h1Case sends one mutated request on a new TLS connection and checks the answer is well formed or nothing. */
export async function h1Case(rng: Rng, port: number, index: number): Promise<void> {
  const wire = mutate(rng, rng.pick(TEMPLATES))
  const client = await rawTls(port)
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
}
