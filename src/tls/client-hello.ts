/**
 * @module client-hello: reads the SNI name from a TLS ClientHello before the handshake starts, without consuming it.
 * Node's SNICallback installs only one certificate of the context it returns (the last added), so a listener that
 * serves ECDSA and RSA certificates for one name must pick the SecureContext before the TLSSocket exists:
 * `new tls.TLSSocket(socket, { isServer: true, secureContext: store.contextFor(await peekServerName(socket)) })`.
 * The same peek hands the whole hello to a HelloSink (the ClientHello census), and readOffer reads what it offers.
 */
import type net from "node:net"
import {
  CIPHER_INDEX,
  CIPHER_WORDS,
  GROUP_INDEX,
  isGrease,
  OTHER_BIT,
  SIGALG_INDEX,
  VERSION_OTHER,
  versionIndex,
} from "./tls-codes.ts"

/** HelloScan says whether a buffer holds a whole ClientHello yet, and the SNI host name in it. */
export interface HelloScan {
  /** true when the ClientHello is complete (or the bytes are not a ClientHello at all) */
  done: boolean
  servername?: string
  /** the protocols of the ALPN extension (RFC 7301 §3.1), when it has one */
  alpn?: string[]
  /**
   * the whole ClientHello body (handshake header stripped), a view of the bytes read: valid until they are put back
   * and read by the TLS socket, so read it synchronously (cert-pick.ts predicts the served certificate from it)
   */
  hello?: Buffer
}

/**
 * HelloSink receives each whole ClientHello body a peek reads (handshake header stripped), before its SNI name is
 * read: the census keeps a compact record of it. Called on the accept path: it must be fast and keep no reference.
 */
export interface HelloSink {
  hello(body: Buffer): void
}

const MAX_HELLO_BYTES = 64 * 1024

/** scanClientHello parses TLS records from the start of buf (RFC 8446 §4.1.2, RFC 6066 §3); never throws. */
export function scanClientHello(buf: Buffer, withAlpn = false, sink?: HelloSink): HelloScan {
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
  const hello = (parts.length === 1 ? parts[0]! : Buffer.concat(parts)).subarray(4, 4 + handshakeLength)
  sink?.hello(hello)
  // The ALPN list only when asked (tls-alpn-01 listeners): most handshakes need the name alone.
  const alpn = withAlpn ? readAlpn(hello) : undefined
  return alpn
    ? { done: true, servername: readServerName(hello), alpn, hello }
    : { done: true, servername: readServerName(hello), hello }
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

/** readServerName reads the host_name of the server_name extension (0; RFC 6066 §3). */
function readServerName(hello: Buffer): string | undefined {
  const body = extensionOf(hello, 0)
  if (!body) return undefined
  // server_name_list: list length, then entries of (type, length, name); host_name is type 0.
  for (let q = 2; q + 3 <= body.length; ) {
    const nameType = body[q]!
    const nameLength = body.readUInt16BE(q + 1)
    q += 3
    if (q + nameLength > body.length) return undefined
    if (nameType === 0) return body.toString("latin1", q, q + nameLength)
    q += nameLength
  }
  return undefined
}

/**
 * peekServerName waits for the client's ClientHello, puts every byte back (unshift) and resolves to its SNI name
 * (undefined when there is none or the bytes are not TLS). Resolves undefined on timeout, close or error: the
 * handshake that follows reports those itself. The socket is left paused with no listeners of ours.
 */
export function peekServerName(socket: net.Socket, timeoutMs: number, sink?: HelloSink): Promise<string | undefined> {
  return peekClientHello(socket, timeoutMs, false, sink).then((hello) => hello.servername)
}

/** peekClientHello is peekServerName, with the ALPN list when `withAlpn` (`{ done: true }` on timeout or close). */
export function peekClientHello(
  socket: net.Socket,
  timeoutMs: number,
  withAlpn = false,
  sink?: HelloSink,
): Promise<HelloScan> {
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
      const scan = scanClientHello(buffered, withAlpn, sink)
      if (scan.done || buffered.length > MAX_HELLO_BYTES) finish(scan)
    }
    const onStop = () => finish({ done: true })
    const timer = setTimeout(onStop, timeoutMs)
    socket.on("data", onData)
    socket.on("end", onStop)
    socket.on("close", onStop)
    socket.on("error", onStop)
    // A socket someone paused (the PROXY header reader leaves it so) does not flow again on a new 'data'
    // listener alone: without this the peek would wait for the deadline.
    socket.resume()
  })
}

/** OFFER_WORDS: the 32-bit words of one offer record that readOffer writes. */
export const OFFER_WORDS = 3 + CIPHER_WORDS
/** Word 0 of an offer record: versions in bits 0-7, the legacy version's index in bits 8-11, then flags. */
export const OFFER_LEGACY_SHIFT = 8
export const OFFER_HAS_VERSIONS = 1 << 16
export const OFFER_HAS_GROUPS = 1 << 17
export const OFFER_HAS_SIGALGS = 1 << 18

/**
 * readOffer writes what a ClientHello body offers into out[at .. at + OFFER_WORDS) as bit masks over the tls-codes
 * tables: word 0 the versions (supported_versions, RFC 8446 §4.2.1, else legacy_version) and flags, word 1 the
 * groups (supported_groups, §4.2.7), word 2 the signature algorithms (§4.2.3), words 3.. the cipher suites. GREASE
 * values (RFC 8701) are skipped; any other unknown code sets the table's OTHER_BIT, so a record is the same size
 * whatever the client sends. Returns false (and leaves the words zero) for a body too short to hold a hello.
 */
export function readOffer(hello: Buffer, out: Uint32Array, at: number): boolean {
  out.fill(0, at, at + OFFER_WORDS)
  if (hello.length < 2 + 32 + 1) return false
  const legacy = (hello[0]! << 8) | hello[1]!
  const legacyIndex = versionIndex(legacy)
  let word0 = (legacyIndex < 0 ? VERSION_OTHER : legacyIndex) << OFFER_LEGACY_SHIFT
  let p = 2 + 32
  p += 1 + hello[p]! // legacy_session_id
  if (hello.length < p + 2) return false
  const suitesEnd = Math.min(hello.length, p + 2 + ((hello[p]! << 8) | hello[p + 1]!))
  for (let q = p + 2; q + 2 <= suitesEnd; q += 2) {
    const code = (hello[q]! << 8) | hello[q + 1]!
    if (isGrease(code)) continue
    const i = CIPHER_INDEX[code]!
    const bit = i === 0 ? CIPHER_WORDS * 32 - 1 : i - 1
    out[at + 3 + (bit >>> 5)]! |= 1 << (bit & 31)
  }
  p = suitesEnd
  if (hello.length >= p + 1) p += 1 + hello[p]! // legacy_compression_methods
  let versions = 0
  if (hello.length >= p + 2) {
    const end = Math.min(hello.length, p + 2 + ((hello[p]! << 8) | hello[p + 1]!))
    p += 2
    while (p + 4 <= end) {
      const type = (hello[p]! << 8) | hello[p + 1]!
      const length = (hello[p + 2]! << 8) | hello[p + 3]!
      p += 4
      if (p + length > end) break
      if (type === 43 && length >= 1) {
        // supported_versions: a one-byte length, then 2-byte versions.
        word0 |= OFFER_HAS_VERSIONS
        versions = codeList(hello, p + 1, Math.min(p + 1 + hello[p]!, p + length), versionBits)
      } else if (type === 10 && length >= 2) {
        word0 |= OFFER_HAS_GROUPS
        out[at + 1] = codeList(
          hello,
          p + 2,
          Math.min(p + 2 + ((hello[p]! << 8) | hello[p + 1]!), p + length),
          GROUP_INDEX,
        )
      } else if (type === 13 && length >= 2) {
        word0 |= OFFER_HAS_SIGALGS
        out[at + 2] = codeList(
          hello,
          p + 2,
          Math.min(p + 2 + ((hello[p]! << 8) | hello[p + 1]!), p + length),
          SIGALG_INDEX,
        )
      }
      p += length
    }
  }
  // Without supported_versions the client asks for legacy_version (RFC 8446 §4.2.1; RFC 5246 §E.1).
  if ((word0 & OFFER_HAS_VERSIONS) === 0) versions = 1 << (legacyIndex < 0 ? VERSION_OTHER : legacyIndex)
  out[at] = word0 | versions
  return true
}

/** versionBits marks TLS versions by their index (tls-codes VERSIONS) + 1, as the other lookup tables do. */
const versionBits = new Uint8Array(65536)
for (let v = 0x0300; v <= 0x0304; v++) versionBits[v] = versionIndex(v) + 1

/** codeList ORs one bit per 2-byte code in hello[from, to) into a mask: index table, GREASE skipped, else OTHER. */
function codeList(hello: Buffer, from: number, to: number, index: Uint8Array): number {
  let mask = 0
  for (let q = from; q + 2 <= to; q += 2) {
    const code = (hello[q]! << 8) | hello[q + 1]!
    if (isGrease(code)) continue
    const i = index[code]!
    mask |= 1 << (i === 0 ? (index === versionBits ? VERSION_OTHER : OTHER_BIT) : i - 1)
  }
  return mask >>> 0
}
