/** encodeProxyV1/V2 and tlvsFromTlsSocket: exact bytes, round trips through the v2 decoder, real TLS sockets, and nginx as a real parser. */
import assert from "node:assert/strict"
import net from "node:net"
import { after, before, describe, test } from "node:test"
import tls from "node:tls"
import {
  encodeProxyV1,
  encodeProxyV2,
  type ProxyEndpoints,
  tlvsFromTlsSocket,
} from "../../../src/protocols/proxy-protocol/encode.ts"
import { parseV1 } from "../../../src/protocols/proxy-protocol/parse.ts"
import { decodeProxyV2 } from "../../helpers/proxy-v2-decoder.ts"
import { type NginxServer, startNginx } from "../../helpers/servers.ts"
import { waitFor, withDeadline } from "../../listeners/proxy-protocol/harness.ts"
import { makeOpensslPki, type OpensslPki } from "../../listeners/proxy-protocol/openssl-pki.ts"

const v4: ProxyEndpoints = {
  source: { address: "192.0.2.1", port: 51000 },
  destination: { address: "198.51.100.7", port: 443 },
}
const v6: ProxyEndpoints = {
  source: { address: "2001:db8::1", port: 12345 },
  destination: { address: "::1", port: 8443 },
}

describe("encodeProxyV1", () => {
  const cases: [string, ProxyEndpoints, string][] = [
    ["IPv4", v4, "PROXY TCP4 192.0.2.1 198.51.100.7 51000 443\r\n"],
    ["IPv6", v6, "PROXY TCP6 2001:db8::1 ::1 12345 8443\r\n"],
    [
      "IPv4-mapped IPv6 as IPv4",
      { source: { address: "::ffff:127.0.0.1", port: 1 }, destination: { address: "::ffff:127.0.0.2", port: 2 } },
      "PROXY TCP4 127.0.0.1 127.0.0.2 1 2\r\n",
    ],
    [
      "mixed families as TCP6 with the IPv4 side mapped",
      { source: { address: "203.0.113.9", port: 1 }, destination: { address: "::1", port: 2 } },
      "PROXY TCP6 ::ffff:203.0.113.9 ::1 1 2\r\n",
    ],
    [
      "a non-IP address as UNKNOWN",
      { source: { address: "/run/client.sock", port: 0 }, destination: { address: "127.0.0.1", port: 2 } },
      "PROXY UNKNOWN\r\n",
    ],
  ]
  for (const [name, info, expected] of cases) {
    test(`encodes ${name}`, () => {
      const out = encodeProxyV1(info)
      assert.equal(out.toString("latin1"), expected)
      assert.ok(parseV1(out), "our own strict parser accepts it")
    })
  }

  test("refuses a port out of range", () => {
    assert.throws(() => encodeProxyV1({ ...v4, source: { address: "1.2.3.4", port: 70000 } }), {
      code: "PC_PROXY_HEADER_ENCODE",
    })
  })
})

describe("encodeProxyV2", () => {
  test("writes the exact bytes of an INET header with an AUTHORITY TLV", () => {
    const out = encodeProxyV2(v4, { authority: "a.test" })
    const expected = Buffer.concat([
      Buffer.from("0d0a0d0a000d0a515549540a", "hex"),
      Buffer.from([0x21, 0x11, 0x00, 12 + 3 + 6]),
      Buffer.from([192, 0, 2, 1, 198, 51, 100, 7, 0xc7, 0x38, 0x01, 0xbb]),
      Buffer.from([0x02, 0x00, 0x06]),
      Buffer.from("a.test"),
    ])
    assert.deepEqual(out, expected)
  })

  test("round-trips INET with every TLV we write", () => {
    const tlvs = {
      alpn: "h2",
      authority: "api.example.com",
      uniqueId: Buffer.from("0123456789abcdef"),
      ssl: {
        client: 0x07,
        verify: 0,
        version: "TLSv1.3",
        cn: "alice",
        cipher: "TLS_AES_256_GCM_SHA384",
        sigAlg: "ECDSA-SHA256",
        keyAlg: "EC256",
      },
      netns: "blue",
      other: [{ type: 0xe1, value: Buffer.from([1, 2, 3]) }],
    }
    const { header, rest } = decodeProxyV2(Buffer.concat([encodeProxyV2(v4, tlvs), Buffer.from("after")]))
    assert.deepEqual(header, {
      version: 2,
      command: "proxy",
      family: "inet",
      transport: "stream",
      source: v4.source,
      destination: v4.destination,
      tlvs,
    })
    assert.equal(rest.toString(), "after")
  })

  test("round-trips INET6, full and compressed forms", () => {
    const info = {
      source: { address: "2001:db8:0:0:1:0:0:1", port: 1 },
      destination: { address: "fe80::1:2:3:4", port: 65535 },
    }
    const { header } = decodeProxyV2(encodeProxyV2(info))
    assert.equal(header.family, "inet6")
    assert.deepEqual(header.source, { address: "2001:db8::1:0:0:1", port: 1 })
    assert.deepEqual(header.destination, { address: "fe80::1:2:3:4", port: 65535 })
  })

  test("maps the IPv4 side of a mixed pair into IPv6", () => {
    const info = { source: { address: "203.0.113.9", port: 1 }, destination: { address: "2001:db8::2", port: 2 } }
    const { header } = decodeProxyV2(encodeProxyV2(info))
    assert.equal(header.family, "inet6")
    assert.equal(header.source?.address, "::ffff:203.0.113.9")
  })

  test("uses UNSPEC (keeping the TLVs) when the addresses are not IP", () => {
    const info = { source: { address: "", port: 0 }, destination: { address: "", port: 0 } }
    const { header, length } = decodeProxyV2(encodeProxyV2(info, { authority: "x.test" }))
    assert.equal(header.family, "unspec")
    assert.equal(header.source, undefined)
    assert.equal(header.tlvs.authority, "x.test")
    assert.equal(length, 16 + 3 + 6)
  })

  test("adds a CRC32C that our strict parser verifies", () => {
    const out = encodeProxyV2(v4, { alpn: "http/1.1" }, { crc32c: true })
    const { header } = decodeProxyV2(out)
    assert.equal(typeof header.checksum, "number")
    out[20] = (out[20]! + 1) & 0xff // flip a byte of the destination address
    assert.throws(() => decodeProxyV2(out), { code: "PC_PROXY_HEADER_INVALID", message: /CRC32C/ })
  })
})

describe("tlvsFromTlsSocket", () => {
  let pki: OpensslPki
  before(() => {
    pki = makeOpensslPki()
  })
  after(() => pki.close())

  /** handshake runs one TLS connection and returns what tlvsFromTlsSocket said on the server side. */
  async function handshake(t: import("node:test").TestContext, client: tls.ConnectionOptions, ca = pki.ca) {
    const server = tls.createServer({
      cert: pki.serverCert,
      key: pki.serverKey,
      ca,
      requestCert: true,
      rejectUnauthorized: false,
      ALPNProtocols: ["h2", "http/1.1"],
    })
    const seen = new Promise<ReturnType<typeof tlvsFromTlsSocket>>((resolve) => {
      server.on("secureConnection", (socket) => {
        socket.on("error", () => {})
        resolve(tlvsFromTlsSocket(socket))
        socket.end()
      })
    })
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r))
    t.after(() => server.close())
    const port = (server.address() as net.AddressInfo).port
    const socket = tls.connect({ host: "127.0.0.1", port, servername: "localhost", ca: pki.ca, ...client })
    socket.on("error", () => {})
    t.after(() => socket.destroy())
    return withDeadline(seen, 5000, "the TLS handshake completed")
  }

  test("describes a verified client certificate: flags, verify 0, CN, version, cipher, ALPN, SNI", async (t) => {
    const tlvs = await handshake(t, {
      cert: pki.clientCert,
      key: pki.clientKey,
      ALPNProtocols: ["h2"],
      maxVersion: "TLSv1.3",
    })
    assert.equal(tlvs.alpn, "h2")
    assert.equal(tlvs.authority, "localhost")
    assert.deepEqual(tlvs.ssl, {
      client: 0x07,
      verify: 0,
      version: "TLSv1.3",
      cipher: "TLS_AES_256_GCM_SHA384",
      cn: "alice",
    })
    // And it survives the wire.
    const { header } = decodeProxyV2(encodeProxyV2(v4, tlvs))
    assert.deepEqual(header.tlvs, tlvs)
  })

  test("sets only PP2_CLIENT_SSL without a client certificate", async (t) => {
    const tlvs = await handshake(t, { maxVersion: "TLSv1.2", ALPNProtocols: ["http/1.1"] })
    assert.equal(tlvs.alpn, "http/1.1")
    assert.equal(tlvs.ssl?.client, 0x01)
    assert.equal(tlvs.ssl?.verify, 0)
    assert.equal(tlvs.ssl?.version, "TLSv1.2")
    assert.equal(tlvs.ssl?.cn, undefined)
    assert.match(tlvs.ssl?.cipher ?? "", /^ECDHE-/)
  })

  test("reports a failed verification and no CN for a certificate the server does not trust", async (t) => {
    const other = makeOpensslPki()
    t.after(other.close)
    const tlvs = await handshake(t, { cert: pki.clientCert, key: pki.clientKey }, other.ca)
    assert.equal(tlvs.ssl?.client, 0x07)
    assert.notEqual(tlvs.ssl?.verify, 0)
    assert.equal(tlvs.ssl?.cn, undefined)
    assert.equal(tlvs.alpn, undefined)
  })
})

describe("PROXY headers read by nginx", () => {
  let nginx: NginxServer

  before(async () => {
    nginx = await startNginx(
      `listen LISTEN proxy_protocol; location / { return 200 "ok\\n"; }`,
      "$proxy_protocol_addr $proxy_protocol_port $proxy_protocol_server_addr $proxy_protocol_server_port $request_uri",
    )
  })

  after(() => nginx?.close())

  const cases: [string, Buffer, string][] = [
    ["v1 TCP4", encodeProxyV1(v4), "192.0.2.1 51000 198.51.100.7 443"],
    ["v1 TCP6", encodeProxyV1(v6), "2001:db8::1 12345 ::1 8443"],
    [
      "v2 INET with ALPN, AUTHORITY and SSL TLVs",
      encodeProxyV2(v4, {
        alpn: "h2",
        authority: "a.test",
        ssl: { client: 1, verify: 0, version: "TLSv1.3", cipher: "X" },
      }),
      "192.0.2.1 51000 198.51.100.7 443",
    ],
    ["v2 INET6", encodeProxyV2(v6), "2001:db8::1 12345 ::1 8443"],
    ["v2 INET with a CRC32C", encodeProxyV2(v4, {}, { crc32c: true }), "192.0.2.1 51000 198.51.100.7 443"],
  ]
  for (const [name, header, logged] of cases) {
    test(`nginx logs the client address from a ${name} header`, async () => {
      const path = `/${name.replace(/[^a-z0-9]+/gi, "-")}`
      const response = await exchange(
        nginx.port,
        Buffer.concat([header, Buffer.from(`GET ${path} HTTP/1.0\r\nHost: x\r\n\r\n`)]),
      )
      assert.match(response, /^HTTP\/1\.1 200 /, `nginx answered: ${response}\n${nginx.output()}`)
      let line = ""
      await waitFor(() => {
        line = nginx.logLines().find((l) => l.endsWith(` ${path}`)) ?? ""
        return line !== ""
      }, `nginx logged ${path}`)
      assert.equal(line, `${logged} ${path}`)
    })
  }
})
/** exchange writes bytes in one write and reads until the server closes. */
function exchange(port: number, bytes: Buffer): Promise<string> {
  const done = new Promise<string>((resolve, reject) => {
    const s = net.connect({ port, host: "127.0.0.1", noDelay: true }, () => s.write(bytes))
    const chunks: Buffer[] = []
    s.on("data", (c: Buffer) => chunks.push(c))
    s.once("error", reject)
    s.once("close", () => resolve(Buffer.concat(chunks).toString()))
  })
  return withDeadline(done, 5000, "nginx answered and closed")
}
