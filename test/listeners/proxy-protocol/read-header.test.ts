/** readProxyHeader on real sockets: v1 and v2 headers, split and coalesced segments, TLS after the header, malformed and slow input. */
import assert from "node:assert/strict"
import { duplexPair } from "node:stream"
import { describe, test } from "node:test"
import tls from "node:tls"
import { encodeProxyV1, encodeProxyV2 } from "../../../src/protocols/proxy-protocol/encode.ts"
import { crc32c, V2_SIGNATURE } from "../../../src/protocols/proxy-protocol/parse.ts"
import { connect, startHeaderServer, waitFor, withDeadline } from "./harness.ts"
import { makeOpensslPki } from "./openssl-pki.ts"

/** v2 builds a v2 header by hand: signature, version/command, family/transport, length, body. */
function v2(verCmd: number, famProto: number, body: Buffer | number[], signature: Buffer = V2_SIGNATURE): Buffer {
  const b = Buffer.from(body)
  const len = Buffer.alloc(2)
  len.writeUInt16BE(b.length)
  return Buffer.concat([signature, Buffer.from([verCmd, famProto]), len, b])
}

/** tlv builds one TLV. */
function tlv(type: number, value: Buffer | string): Buffer {
  const v = Buffer.from(value)
  const head = Buffer.from([type, 0, 0])
  head.writeUInt16BE(v.length, 1)
  return Buffer.concat([head, v])
}

// 192.0.2.1:51000 -> 198.51.100.7:443
const INET = [192, 0, 2, 1, 198, 51, 100, 7, 0xc7, 0x38, 0x01, 0xbb]

/** sendAndRead connects, writes bytes in one write, and returns readProxyHeader's outcome. */
async function sendAndRead(t: import("node:test").TestContext, bytes: Buffer | string, options = { timeoutMs: 2000 }) {
  const server = await startHeaderServer(t, options)
  const client = await connect(t, server.port)
  client.write(bytes)
  return server.outcome()
}

describe("readProxyHeader: v1", () => {
  test("reads a TCP4 header", async (t) => {
    const o = await sendAndRead(t, "PROXY TCP4 1.2.3.4 5.6.7.8 111 222\r\n")
    assert.deepEqual(o.info, {
      version: 1,
      source: { address: "1.2.3.4", port: 111 },
      destination: { address: "5.6.7.8", port: 222 },
      tlvs: {},
    })
  })

  test("reads a TCP6 header", async (t) => {
    const o = await sendAndRead(t, "PROXY TCP6 2001:db8::1 ::1 65535 0\r\n")
    assert.deepEqual(o.info?.source, { address: "2001:db8::1", port: 65535 })
    assert.deepEqual(o.info?.destination, { address: "::1", port: 0 })
  })

  test("reads a 107-byte TCP6 header, the longest allowed", async (t) => {
    const a = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"
    const line = `PROXY TCP6 ${a} ${a} 65535 65535\r\n`
    assert.equal(line.length, 104)
    const o = await sendAndRead(t, line)
    assert.equal(o.info?.source.address, a)
  })

  for (const line of ["PROXY UNKNOWN\r\n", "PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n"]) {
    test(`returns null for ${JSON.stringify(line)}`, async (t) => {
      const o = await sendAndRead(t, line)
      assert.equal(o.error, undefined)
      assert.equal(o.info, null)
    })
  }
})

describe("readProxyHeader: v2", () => {
  test("reads an INET header with ALPN and AUTHORITY TLVs", async (t) => {
    const body = Buffer.concat([Buffer.from(INET), tlv(0x01, "h2"), tlv(0x02, "api.example.com")])
    const o = await sendAndRead(t, v2(0x21, 0x11, body))
    assert.deepEqual(o.info, {
      version: 2,
      source: { address: "192.0.2.1", port: 51000 },
      destination: { address: "198.51.100.7", port: 443 },
      tlvs: { alpn: "h2", authority: "api.example.com" },
    })
  })

  test("reads an INET6 header with an SSL TLV and its sub-TLVs, and unknown TLVs raw", async (t) => {
    const src = Buffer.from("20010db8000000000000000000000001", "hex")
    const dst = Buffer.from("20010db8000000010000000000000000", "hex")
    const ports = Buffer.from([0x30, 0x39, 0x01, 0xbb])
    const ssl = Buffer.concat([
      Buffer.from([0x07, 0, 0, 0, 0]),
      tlv(0x21, "TLSv1.3"),
      tlv(0x22, "alice"),
      tlv(0x23, "TLS_AES_128_GCM_SHA256"),
    ])
    const body = Buffer.concat([src, dst, ports, tlv(0x20, ssl), tlv(0x04, "noop"), tlv(0xe0, "custom")])
    const o = await sendAndRead(t, v2(0x21, 0x21, body))
    assert.deepEqual(o.info?.source, { address: "2001:db8::1", port: 12345 })
    assert.deepEqual(o.info?.destination, { address: "2001:db8:0:1::", port: 443 })
    assert.deepEqual(o.info?.tlvs, {
      ssl: { client: 7, verify: 0, version: "TLSv1.3", cn: "alice", cipher: "TLS_AES_128_GCM_SHA256" },
      other: [{ type: 0xe0, value: Buffer.from("custom") }],
    })
  })

  test("returns null for a LOCAL command (a health check), even with addresses", async (t) => {
    const o = await sendAndRead(t, v2(0x20, 0x11, INET))
    assert.equal(o.error, undefined)
    assert.equal(o.info, null)
  })

  test("returns null for LOCAL over UNSPEC with no body", async (t) => {
    const o = await sendAndRead(t, v2(0x20, 0x00, []))
    assert.equal(o.info, null)
  })

  test("returns null for PROXY over UNSPEC and for UNIX addresses (use the socket's own)", async (t) => {
    assert.equal((await sendAndRead(t, v2(0x21, 0x00, tlv(0x02, "x.test")))).info, null)
    assert.equal((await sendAndRead(t, v2(0x21, 0x31, Buffer.alloc(216)))).info, null)
  })

  test("accepts a header whose CRC32C checksum matches", async (t) => {
    const header = v2(0x21, 0x11, Buffer.concat([Buffer.from(INET), tlv(0x03, Buffer.alloc(4))]))
    header.writeUInt32BE(crc32c(header), header.length - 4)
    const o = await sendAndRead(t, header)
    assert.equal(o.info?.source.address, "192.0.2.1")
  })
})

describe("readProxyHeader: framing", () => {
  test("leaves the bytes after the header on the socket", async (t) => {
    const server = await startHeaderServer(t)
    const client = await connect(t, server.port)
    client.write("PROXY TCP4 1.2.3.4 5.6.7.8 111 222\r\nhello, after the header")
    const o = await server.outcome()
    assert.equal(o.info?.source.address, "1.2.3.4")
    const chunks: Buffer[] = []
    o.socket.on("data", (c: Buffer) => chunks.push(c))
    o.socket.resume()
    await waitFor(() => Buffer.concat(chunks).length >= 22, "the rest was delivered")
    assert.equal(Buffer.concat(chunks).toString(), "hello, after the header")
  })

  const split: [string, Buffer][] = [
    ["v1", Buffer.from("PROXY TCP4 1.2.3.4 5.6.7.8 111 222\r\n")],
    ["v2", v2(0x21, 0x11, Buffer.concat([Buffer.from(INET), tlv(0x02, "split.example")]))],
  ]
  for (const [name, header] of split) {
    test(`reads a ${name} header that arrives one byte per segment`, async (t) => {
      const server = await startHeaderServer(t)
      const client = await connect(t, server.port)
      const socket = await server.accepted()
      for (let i = 0; i < header.length; i++) {
        client.write(header.subarray(i, i + 1))
        // Wait until the server has read this byte, so each byte is its own read.
        await waitFor(() => socket.bytesRead >= i + 1, `byte ${i} was read`)
      }
      client.write("tail")
      const o = await server.outcome()
      assert.equal(o.error, undefined)
      assert.equal(o.info?.source.port, name === "v1" ? 111 : 51000)
      const chunks: Buffer[] = []
      o.socket.on("data", (c: Buffer) => chunks.push(c))
      o.socket.resume()
      await waitFor(() => Buffer.concat(chunks).length >= 4, "the tail was delivered")
      assert.equal(Buffer.concat(chunks).toString(), "tail")
    })
  }

  const endpoints = {
    source: { address: "203.0.113.9", port: 40000 },
    destination: { address: "127.0.0.1", port: 8443 },
  }
  const coalesced: [string, Buffer][] = [
    ["v1", encodeProxyV1(endpoints)],
    ["v2", encodeProxyV2(endpoints, { alpn: "h2", authority: "localhost" })],
  ]
  for (const [name, header] of coalesced) {
    test(`a ${name} header and the TLS ClientHello in one write, then a real handshake on the same socket`, async (t) => {
      const pki = makeOpensslPki()
      t.after(pki.close)
      const server = await startHeaderServer(t)
      const raw = await connect(t, server.port)
      // The TLS client writes into one end of a pair; we forward its bytes to the TCP socket, the header glued to
      // the front of the first write (the ClientHello).
      const [clientEnd, wire] = duplexPair()
      let first = true
      wire.on("data", (chunk: Buffer) => {
        raw.write(first ? Buffer.concat([header, chunk]) : chunk)
        first = false
      })
      raw.on("data", (chunk: Buffer) => wire.write(chunk))
      const tlsClient = tls.connect({ socket: clientEnd, servername: "localhost", ca: pki.ca, ALPNProtocols: ["h2"] })
      tlsClient.on("error", () => {})
      t.after(() => tlsClient.destroy())

      const o = await server.outcome()
      assert.equal(o.error, undefined)
      assert.deepEqual(o.info?.source, endpoints.source)
      assert.ok(o.socket.bytesRead > header.length, "the ClientHello arrived together with the header")
      const secure = new tls.TLSSocket(o.socket, {
        isServer: true,
        secureContext: tls.createSecureContext({ cert: pki.serverCert, key: pki.serverKey }),
        ALPNProtocols: ["h2"],
      })
      secure.on("error", () => {})
      t.after(() => secure.destroy())
      secure.on("secure", () => secure.write("hello over tls"))
      const received: Buffer[] = []
      tlsClient.on("data", (c: Buffer) => received.push(c))
      await waitFor(() => Buffer.concat(received).length >= 14, "the client read the server's bytes")
      assert.equal(Buffer.concat(received).toString(), "hello over tls")
      assert.equal(tlsClient.alpnProtocol, "h2")
      assert.equal(tlsClient.authorized, true)
      assert.equal((secure as tls.TLSSocket & { servername?: string }).servername, "localhost")
    })
  }
})

describe("readProxyHeader: handing over to tls.Server", () => {
  test("a tls.Server given the socket through 'connection' completes the handshake and sees the bytes after the header", async (t) => {
    const pki = makeOpensslPki()
    t.after(pki.close)
    const tlsServer = tls.createServer({ cert: pki.serverCert, key: pki.serverKey })
    const secured = new Promise<tls.TLSSocket>((resolve) => tlsServer.once("secureConnection", resolve))
    const server = await startHeaderServer(t)
    const raw = await connect(t, server.port)
    raw.write("PROXY TCP4 198.51.100.1 203.0.113.2 1111 443\r\n")
    const o = await server.outcome()
    assert.equal(o.info?.source.address, "198.51.100.1")
    tlsServer.emit("connection", o.socket)
    // The client's TLS starts only now, on the same TCP connection.
    const client = tls.connect({ socket: raw, servername: "localhost", ca: pki.ca })
    client.on("error", () => {})
    t.after(() => client.destroy())
    const socket = await withDeadline(secured, 5000, "the tls.Server completed the handshake")
    socket.on("error", () => {})
    t.after(() => socket.destroy())
    socket.write("served")
    const got: Buffer[] = []
    client.on("data", (c: Buffer) => got.push(c))
    await waitFor(() => Buffer.concat(got).toString() === "served", "the client read through TLS")
  })
})

describe("readProxyHeader: rejects", () => {
  const INET6 = Buffer.alloc(36)
  const sslShort = Buffer.concat([Buffer.from(INET), tlv(0x20, Buffer.from([1, 0, 0]))])
  const cases: [string, Buffer | string][] = [
    ["not a PROXY header", "GET / HTTP/1.1\r\nHost: a\r\n\r\n"],
    ["lower-case proxy", "proxy TCP4 1.2.3.4 5.6.7.8 111 222\r\n"],
    ["a port with a leading zero", "PROXY TCP4 1.2.3.4 5.6.7.8 0111 222\r\n"],
    ["a port above 65535", "PROXY TCP4 1.2.3.4 5.6.7.8 111 65536\r\n"],
    ["a signed port", "PROXY TCP4 1.2.3.4 5.6.7.8 +111 222\r\n"],
    ["an IPv4 octet with a leading zero", "PROXY TCP4 1.2.3.04 5.6.7.8 111 222\r\n"],
    ["an IPv4 octet above 255", "PROXY TCP4 1.2.3.256 5.6.7.8 111 222\r\n"],
    ["IPv6 addresses under TCP4", "PROXY TCP4 ::1 ::1 111 222\r\n"],
    ["IPv4 addresses under TCP6", "PROXY TCP6 1.2.3.4 5.6.7.8 111 222\r\n"],
    ["an IPv6 zone", "PROXY TCP6 fe80::1%eth0 ::1 111 222\r\n"],
    ["a double space", "PROXY TCP4  1.2.3.4 5.6.7.8 111 222\r\n"],
    ["a missing field", "PROXY TCP4 1.2.3.4 5.6.7.8 111\r\n"],
    ["an extra field", "PROXY TCP4 1.2.3.4 5.6.7.8 111 222 333\r\n"],
    ["an unknown protocol", "PROXY UDP4 1.2.3.4 5.6.7.8 111 222\r\n"],
    ["LF without CR", "PROXY TCP4 1.2.3.4 5.6.7.8 111 222\n"],
    ["CR without LF", "PROXY TCP4 1.2.3.4 5.6.7.8 111 222\rX"],
    ["a control byte", "PROXY TCP4 1.2.3.4\t5.6.7.8 111 222\r\n"],
    ["a v1 line longer than 107 bytes", `PROXY UNKNOWN ${"a".repeat(120)}\r\n`],
    ["a bad v2 signature", v2(0x21, 0x11, INET, Buffer.from("\r\n\r\n\0\r\nQUIX\n"))],
    ["v2 version 1", v2(0x11, 0x11, INET)],
    ["v2 command 2", v2(0x22, 0x11, INET)],
    ["v2 family 4", v2(0x21, 0x41, INET)],
    ["v2 transport 3", v2(0x21, 0x13, INET)],
    ["v2 INET over DGRAM", v2(0x21, 0x12, INET)],
    ["v2 INET with a short address block", v2(0x21, 0x11, INET.slice(0, 8))],
    ["v2 INET6 with a short address block", v2(0x21, 0x21, INET6.subarray(0, 20))],
    ["v2 length over the limit", v2(0x21, 0x11, Buffer.alloc(5000))],
    [
      "a TLV that overruns the header",
      v2(0x21, 0x11, Buffer.concat([Buffer.from(INET), Buffer.from([0x02, 0x00, 0x09, 0x61])])),
    ],
    ["a truncated TLV header", v2(0x21, 0x11, Buffer.concat([Buffer.from(INET), Buffer.from([0x02, 0x00])]))],
    ["an SSL TLV shorter than 5 bytes", v2(0x21, 0x11, sslShort)],
    ["a UNIQUE_ID over 128 bytes", v2(0x21, 0x11, Buffer.concat([Buffer.from(INET), tlv(0x05, Buffer.alloc(129))]))],
    ["a CRC32C mismatch", v2(0x21, 0x11, Buffer.concat([Buffer.from(INET), tlv(0x03, Buffer.from([1, 2, 3, 4]))]))],
  ]
  for (const [name, bytes] of cases) {
    test(`rejects ${name}`, async (t) => {
      const o = await sendAndRead(t, bytes)
      assert.equal(o.info, undefined, `unexpectedly accepted: ${JSON.stringify(o.info)}`)
      assert.equal(o.error?.code, "PC_PROXY_HEADER_INVALID", o.error?.message)
      assert.equal(o.error?.source, "client")
    })
  }

  test("rejects a connection that ends mid-header", async (t) => {
    const server = await startHeaderServer(t)
    const client = await connect(t, server.port)
    client.end("PROXY TCP4 1.2.")
    const o = await server.outcome()
    assert.equal(o.error?.code, "PC_PROXY_HEADER_INVALID")
  })

  test("times out a header that is too slow", async (t) => {
    const server = await startHeaderServer(t, { timeoutMs: 150 })
    const client = await connect(t, server.port)
    client.write("PROXY TCP4 ")
    const started = Date.now()
    const o = await server.outcome()
    assert.equal(o.error?.code, "PC_PROXY_HEADER_TIMEOUT")
    assert.equal(o.error?.source, "client")
    assert.ok(Date.now() - started >= 100, "did not time out early")
    await withDeadline(
      new Promise((r) => (client.destroyed ? r(null) : client.once("close", r))),
      5000,
      "the client was closed",
    )
  })
})
