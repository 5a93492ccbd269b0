/** @module client-hello (test helper): raw TLS ClientHello records with chosen code points, for the census tests. */
import { randomBytes } from "node:crypto"
import net from "node:net"

/** HelloSpec: what a hand-made ClientHello offers; an absent list leaves its extension out. */
export interface HelloSpec {
  legacyVersion?: number
  ciphers: number[]
  versions?: number[]
  groups?: number[]
  sigalgs?: number[]
  servername?: string
}

function u16(n: number): Buffer {
  const b = Buffer.alloc(2)
  b.writeUInt16BE(n)
  return b
}

function list16(codes: number[]): Buffer {
  return Buffer.concat(codes.map(u16))
}

function extension(type: number, body: Buffer): Buffer {
  return Buffer.concat([u16(type), u16(body.length), body])
}

/** buildClientHello makes one TLS record holding a ClientHello (RFC 8446 §4.1.2) as spec says. */
export function buildClientHello(spec: HelloSpec): Buffer {
  const extensions: Buffer[] = []
  if (spec.servername !== undefined) {
    const name = Buffer.from(spec.servername, "latin1")
    const entry = Buffer.concat([Buffer.from([0]), u16(name.length), name])
    extensions.push(extension(0, Buffer.concat([u16(entry.length), entry])))
  }
  if (spec.groups) extensions.push(extension(10, Buffer.concat([u16(spec.groups.length * 2), list16(spec.groups)])))
  if (spec.sigalgs) extensions.push(extension(13, Buffer.concat([u16(spec.sigalgs.length * 2), list16(spec.sigalgs)])))
  if (spec.versions) {
    extensions.push(extension(43, Buffer.concat([Buffer.from([spec.versions.length * 2]), list16(spec.versions)])))
  }
  const ext = Buffer.concat(extensions)
  const body = Buffer.concat([
    u16(spec.legacyVersion ?? 0x0303),
    randomBytes(32),
    Buffer.from([0]), // legacy_session_id
    u16(spec.ciphers.length * 2),
    list16(spec.ciphers),
    Buffer.from([1, 0]), // legacy_compression_methods: null
    u16(ext.length),
    ext,
  ])
  const handshake = Buffer.concat([
    Buffer.from([1, body.length >> 16, (body.length >> 8) & 0xff, body.length & 0xff]),
    body,
  ])
  return Buffer.concat([Buffer.from([0x16, 0x03, 0x01]), u16(handshake.length), handshake])
}

/**
 * sendHello connects, writes the raw ClientHello and resolves when the server has answered or closed (it has read
 * the hello by then): whatever TLS does next with these bytes is not the test's business.
 */
export function sendHello(port: number, hello: Buffer, host = "127.0.0.1", timeoutMs = 5_000): Promise<void> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, host, () => socket.write(hello))
    const timer = setTimeout(() => {
      socket.destroy()
      reject(new Error("no answer to the raw ClientHello"))
    }, timeoutMs)
    const done = () => {
      clearTimeout(timer)
      socket.destroy()
      resolve()
    }
    socket.once("data", done)
    socket.once("close", done)
    socket.on("error", () => {})
  })
}
