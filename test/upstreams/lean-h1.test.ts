/** The lean HTTP/1.1 client's strict response parsing: head, framing conflicts, chunked decoding. */
import assert from "node:assert/strict"
import { describe, test } from "node:test"
import { ChunkedDecoder } from "../../src/upstreams/h1/chunked.ts"
import { parseResponseHead, parseStrict } from "../../src/upstreams/h1/response-head.ts"

const head = (...lines: string[]) => lines.join("\r\n")

describe("parseResponseHead", () => {
  test("reads status, headers (repeats as arrays) and Content-Length framing", () => {
    const h = parseResponseHead(
      head("HTTP/1.1 200 OK", "Content-Length: 5", "Set-Cookie: a=1", "set-cookie: b=2", "X-Empty:"),
      "GET",
    )
    assert.equal(h.status, 200)
    assert.equal(h.statusText, "OK")
    assert.deepEqual(h.headers["set-cookie"], ["a=1", "b=2"])
    assert.equal(h.headers["x-empty"], "")
    assert.deepEqual(h.framing, { kind: "length", length: 5 })
    assert.equal(h.keepAlive, true)
  })

  test("field names that are Object members (constructor, toString, __proto__) fail nothing, in both parsers", () => {
    for (const parse of [parseResponseHead, parseStrict]) {
      const h = parse(
        head(
          "HTTP/1.1 200 OK",
          "Content-Length: 0",
          "constructor: a",
          "Constructor: b",
          "toString: c",
          "__proto__: d",
          "__proto__: e",
        ),
        "GET",
      )
      assert.deepEqual(h.headers["constructor"], ["a", "b"])
      assert.equal(h.headers["tostring"], "c")
      assert.equal(Object.hasOwn(h.headers, "__proto__"), false)
      assert.equal(Object.getPrototypeOf(h.headers), Object.prototype)
    }
  })

  test("chunked, close-delimited, and no body for HEAD, 204 and 304", () => {
    assert.deepEqual(parseResponseHead(head("HTTP/1.1 200 OK", "Transfer-Encoding: chunked"), "GET").framing, {
      kind: "chunked",
    })
    const close = parseResponseHead("HTTP/1.1 200 OK", "GET")
    assert.deepEqual(close.framing, { kind: "close" })
    assert.equal(close.keepAlive, false)
    assert.deepEqual(parseResponseHead(head("HTTP/1.1 200 OK", "Content-Length: 9"), "HEAD").framing, { kind: "none" })
    assert.deepEqual(parseResponseHead("HTTP/1.1 204 No Content", "GET").framing, { kind: "none" })
    assert.deepEqual(parseResponseHead("HTTP/1.1 304 Not Modified", "GET").framing, { kind: "none" })
  })

  test("Connection: close, HTTP/1.0 and the Keep-Alive timeout hint", () => {
    assert.equal(
      parseResponseHead(head("HTTP/1.1 200 OK", "Content-Length: 0", "Connection: close"), "GET").keepAlive,
      false,
    )
    assert.equal(parseResponseHead(head("HTTP/1.0 200 OK", "Content-Length: 0"), "GET").keepAlive, false)
    // The name and the token in any case, in a list, with OWS: both parsers (RFC 9110 §7.6.1 tokens are
    // case-insensitive; a backend's "Connection: Close" must not leave the connection in the pool).
    for (const parse of [parseResponseHead, parseStrict]) {
      for (const line of ["Connection: Close", "CONNECTION:  keep-alive, CLOSE ", "connection: x,cLoSe"]) {
        assert.equal(parse(head("HTTP/1.1 200 OK", "Content-Length: 0", line), "GET").keepAlive, false, line)
      }
      assert.equal(parse(head("HTTP/1.1 200 OK", "Content-Length: 0", "Connection: closed"), "GET").keepAlive, true)
    }
    const h = parseResponseHead(head("HTTP/1.1 200 OK", "Content-Length: 0", "Keep-Alive: timeout=5, max=100"), "GET")
    assert.equal(h.keepAliveTimeoutMs, 5000)
  })

  test("refuses what could desynchronise the connection", () => {
    const bad = [
      head("HTTP/1.1 200 OK", "Content-Length: 5", "Transfer-Encoding: chunked"),
      head("HTTP/1.1 200 OK", "Content-Length: 5", "Content-Length: 6"),
      head("HTTP/1.1 200 OK", "Content-Length: 5, 6"),
      head("HTTP/1.1 200 OK", "Content-Length: -1"),
      head("HTTP/1.1 200 OK", "Content-Length: 0x10"),
      head("HTTP/1.1 200 OK", "Transfer-Encoding: gzip, chunked"),
      head("HTTP/1.1 200 OK", "Transfer-Encoding: chunked, identity"),
      // NBSP is not OWS (String.prototype.trim would take it): an unknown coding, not chunked.
      head("HTTP/1.1 200 OK", "Transfer-Encoding: \xa0chunked"),
      head("HTTP/1.1 200 OK", "Content-Length: 5, \xa05"),
      head("HTTP/1.1 200 OK", "X-A: 1", " folded"),
      head("HTTP/1.1 200 OK", "Bad Name: 1"),
      head("HTTP/1.1 200 OK", "X-A : 1"),
      head("HTTP/1.1 200 OK", "X-A: a\0b"),
      "HTTP/1.1 200 OK\nContent-Length: 0",
      "HTTP/2 200",
      "HTTP/1.1 20 OK",
      "HTTP/1.1 200 OK\r\nX: \x01",
    ]
    for (const text of bad) assert.throws(() => parseResponseHead(text, "GET"), Error, JSON.stringify(text))
  })

  test("the scan and the strict parser agree on every head, valid or not (each byte of a head changed)", () => {
    const base = head(
      "HTTP/1.1 200 OK",
      "Server: nginx/1.22.1",
      "Content-Type: text/plain",
      "Content-Length: 100",
      "Connection: keep-alive",
      "Keep-Alive: timeout=5",
      'ETag: "6b0ef246-64"',
      "X-Pad:\t a b \t",
    )
    const outcome = (parse: (t: string, m: string) => unknown, text: string) => {
      try {
        return { ok: parse(text, "GET") }
      } catch (err) {
        return { err: (err as Error).message, code: (err as { code?: string }).code }
      }
    }
    // Each position replaced by a character of interest: CR, LF, NUL, SP, HTAB, ':', a letter, DEL, obs-text, ','.
    const probes = ["\r", "\n", "\0", " ", "\t", ":", "a", "\x7f", "\xe9", ",", "\r\n"]
    let compared = 0
    for (let i = 0; i <= base.length; i++) {
      for (const c of probes) {
        for (const text of [base.slice(0, i) + c + base.slice(i + 1), base.slice(0, i) + c + base.slice(i)]) {
          assert.deepEqual(outcome(parseResponseHead, text), outcome(parseStrict, text), JSON.stringify(text))
          compared++
        }
      }
    }
    assert.ok(compared > 3000)
  })

  test("the same Content-Length repeated is one length (RFC 9110 §8.6)", () => {
    const h = parseResponseHead(head("HTTP/1.1 200 OK", "Content-Length: 7", "Content-Length: 7"), "GET")
    assert.deepEqual(h.framing, { kind: "length", length: 7 })
  })
})

/** decode feeds the decoder the given pieces and returns the body and whether it finished. */
function decode(pieces: string[]): { body: string; done: boolean } {
  const d = new ChunkedDecoder()
  let body = ""
  for (const piece of pieces) {
    const buf = Buffer.from(piece, "latin1")
    let pos = 0
    while (pos < buf.length && !d.done) {
      pos = d.step(buf, pos)
      if (d.data) body += d.data.toString("latin1")
    }
  }
  return { body, done: d.done }
}

describe("ChunkedDecoder", () => {
  test("decodes chunks, extensions and trailers, in one piece or byte by byte", () => {
    const wire = "5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n"
    assert.deepEqual(decode([wire]), { body: "hello world", done: true })
    assert.deepEqual(decode([...wire]), { body: "hello world", done: true })
  })

  test("stops at the end of the body: bytes after it are not consumed", () => {
    const d = new ChunkedDecoder()
    const buf = Buffer.from("1\r\na\r\n0\r\n\r\nHTTP/1.1 200 OK")
    let pos = 0
    while (!d.done) pos = d.step(buf, pos)
    assert.equal(buf.subarray(pos).toString(), "HTTP/1.1 200 OK")
  })

  test("refuses malformed framing", () => {
    for (const wire of ["g\r\n", "5\nhello\r\n", "5\r\nhelloX\r\n", "-1\r\n", "1 1\r\n", `${"f".repeat(13)}\r\n`]) {
      assert.throws(() => decode([wire]), Error, JSON.stringify(wire))
    }
  })

  test("a bare CR in a trailer line is refused, never trimmed away, in both modes", () => {
    for (const trailer of ["X: \ry", "X:\r y", "X: y\r", "X: y\r\r"]) {
      const wire = `1\r\na\r\n0\r\n${trailer}\r\n\r\n`
      for (const strict of [false, true]) {
        const d = new ChunkedDecoder(strict)
        const buf = Buffer.from(wire, "latin1")
        assert.throws(
          () => {
            let pos = 0
            while (!d.done && pos < buf.length) pos = d.step(buf, pos)
          },
          Error,
          `${JSON.stringify(wire)} strict ${strict}`,
        )
      }
    }
  })
})
