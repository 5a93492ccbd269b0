/**
 * @module client-hello: reads the SNI name from a TLS ClientHello before the handshake starts, without consuming it.
 * Node's SNICallback installs only one certificate of the context it returns (the last added), so a listener that
 * serves ECDSA and RSA certificates for one name must pick the SecureContext before the TLSSocket exists:
 * `new tls.TLSSocket(socket, { isServer: true, secureContext: store.contextFor(await peekServerName(socket)) })`.
 */
import type net from "node:net"

/** HelloScan says whether a buffer holds a whole ClientHello yet, and the SNI host name in it. */
export interface HelloScan {
  /** true when the ClientHello is complete (or the bytes are not a ClientHello at all) */
  done: boolean
  servername?: string
  /** the protocols of the ALPN extension (RFC 7301 §3.1), when it has one */
  alpn?: string[]
}

const MAX_HELLO_BYTES = 64 * 1024

/** scanClientHello parses TLS records from the start of buf (RFC 8446 §4.1.2, RFC 6066 §3); never throws. */
export function scanClientHello(buf: Buffer, withAlpn = false): HelloScan {
  // Gather the handshake bytes carried by consecutive handshake records.
  const parts: Buffer[] = []
  let offset = 0
  let handshakeLength = -1
  let gathered = 0
  while (true) {
    if (buf.length < offset + 5) return { done: false }
    if (buf[offset] !== 0x16) return { done: true }
    const recordLength = buf.readUInt16BE(offset + 3)
    if (buf.length < offset + 5 + recordLength) return { done: false }
    const fragment = buf.subarray(offset + 5, offset + 5 + recordLength)
    parts.push(fragment)
    gathered += fragment.length
    offset += 5 + recordLength
    if (handshakeLength < 0 && gathered >= 4) {
      const head = Buffer.concat(parts)
      if (head[0] !== 0x01) return { done: true }
      handshakeLength = head.readUIntBE(1, 3)
    }
    if (handshakeLength >= 0 && gathered >= handshakeLength + 4) break
    if (offset > MAX_HELLO_BYTES) return { done: true }
  }
  const hello = Buffer.concat(parts).subarray(4, 4 + handshakeLength)
  // The ALPN list only when asked (tls-alpn-01 listeners): most handshakes need the name alone.
  const alpn = withAlpn ? readAlpn(hello) : undefined
  return alpn
    ? { done: true, servername: readServerName(hello), alpn }
    : { done: true, servername: readServerName(hello) }
}

/** extensionOf finds one extension's body in a ClientHello (RFC 8446 §4.1.2), or undefined. */
function extensionOf(hello: Buffer, wanted: number): Buffer | undefined {
  let p = 2 + 32 // legacy_version, random
  if (hello.length < p + 1) return undefined
  p += 1 + hello[p]! // legacy_session_id
  if (hello.length < p + 2) return undefined
  p += 2 + hello.readUInt16BE(p) // cipher_suites
  if (hello.length < p + 1) return undefined
  p += 1 + hello[p]! // legacy_compression_methods
  if (hello.length < p + 2) return undefined
  const end = Math.min(hello.length, p + 2 + hello.readUInt16BE(p))
  p += 2
  while (p + 4 <= end) {
    const type = hello.readUInt16BE(p)
    const length = hello.readUInt16BE(p + 2)
    p += 4
    if (type === wanted) return p + length <= end ? hello.subarray(p, p + length) : undefined
    p += length
  }
  return undefined
}

/** readAlpn reads the application_layer_protocol_negotiation extension (16): a list of length-prefixed names. */
function readAlpn(hello: Buffer): string[] | undefined {
  const body = extensionOf(hello, 16)
  if (!body || body.length < 2) return undefined
  const end = Math.min(body.length, 2 + body.readUInt16BE(0))
  const out: string[] = []
  for (let q = 2; q < end; ) {
    const length = body[q]!
    if (q + 1 + length > end) break
    out.push(body.toString("latin1", q + 1, q + 1 + length))
    q += 1 + length
  }
  return out
}

function readServerName(hello: Buffer): string | undefined {
  let p = 2 + 32 // legacy_version, random
  if (hello.length < p + 1) return undefined
  p += 1 + hello[p]! // legacy_session_id
  if (hello.length < p + 2) return undefined
  p += 2 + hello.readUInt16BE(p) // cipher_suites
  if (hello.length < p + 1) return undefined
  p += 1 + hello[p]! // legacy_compression_methods
  if (hello.length < p + 2) return undefined
  const end = Math.min(hello.length, p + 2 + hello.readUInt16BE(p))
  p += 2
  while (p + 4 <= end) {
    const type = hello.readUInt16BE(p)
    const length = hello.readUInt16BE(p + 2)
    p += 4
    if (type === 0 && p + length <= end) {
      // server_name_list: list length, then entries of (type, length, name); host_name is type 0.
      let q = p + 2
      while (q + 3 <= p + length) {
        const nameType = hello[q]!
        const nameLength = hello.readUInt16BE(q + 1)
        q += 3
        if (q + nameLength > p + length) return undefined
        if (nameType === 0) return hello.toString("latin1", q, q + nameLength)
        q += nameLength
      }
      return undefined
    }
    p += length
  }
  return undefined
}

/**
 * peekServerName waits for the client's ClientHello, puts every byte back (unshift) and resolves to its SNI name
 * (undefined when there is none or the bytes are not TLS). Resolves undefined on timeout, close or error: the
 * handshake that follows reports those itself. The socket is left paused with no listeners of ours.
 */
export function peekServerName(socket: net.Socket, timeoutMs: number): Promise<string | undefined> {
  return peekClientHello(socket, timeoutMs).then((hello) => hello.servername)
}

/** peekClientHello is peekServerName, with the ALPN list when `withAlpn` (`{ done: true }` on timeout or close). */
export function peekClientHello(socket: net.Socket, timeoutMs: number, withAlpn = false): Promise<HelloScan> {
  return new Promise((resolve) => {
    let buffered: Buffer = Buffer.alloc(0)
    const finish = (hello: HelloScan) => {
      clearTimeout(timer)
      socket.off("data", onData)
      socket.off("end", onStop)
      socket.off("close", onStop)
      socket.off("error", onStop)
      socket.pause()
      if (buffered.length > 0 && !socket.destroyed) socket.unshift(buffered)
      resolve(hello)
    }
    const onData = (chunk: Buffer) => {
      buffered = buffered.length === 0 ? chunk : Buffer.concat([buffered, chunk])
      const scan = scanClientHello(buffered, withAlpn)
      if (scan.done || buffered.length > MAX_HELLO_BYTES) finish(scan)
    }
    const onStop = () => finish({ done: true })
    const timer = setTimeout(onStop, timeoutMs)
    socket.on("data", onData)
    socket.on("end", onStop)
    socket.on("close", onStop)
    socket.on("error", onStop)
  })
}
