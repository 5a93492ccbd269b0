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
  // One walk of the body serves every reader of this hello: the census (sink), the name, the ALPN list, and the
  // certificate prediction the listener makes next (cert-pick.ts reads the same layout).
  const layout = walkHello(hello)
  sink?.hello(hello)
  // The ALPN list only when asked (tls-alpn-01 listeners): most handshakes need the name alone.
  const alpn = withAlpn ? readAlpn(hello, layout) : undefined
  return alpn
    ? { done: true, servername: readServerName(hello, layout), alpn, hello }
    : { done: true, servername: readServerName(hello, layout), hello }
}

/**
 * HelloLayout says where the parts of one ClientHello body lie (RFC 8446 §4.1.2): offsets into the body, -1 for an
 * extension it does not carry. Filled by walkHello, the one walk of the extension list that the name and ALPN
 * readers, the census (readOffer) and the certificate prediction (cert-pick.ts) share.
 */
export class HelloLayout {
  /** the body this layout describes (compared by identity: each peek reads into a new view) */
  of: Buffer | undefined = undefined
  /** the body holds legacy_version, random, legacy_session_id and the cipher_suites length */
  valid = false
  /** cipher_suites: [suitesFrom, suitesTo), clamped to the body */
  suitesFrom = 0
  suitesTo = 0
  /** the body holds legacy_compression_methods' length byte */
  compression = false
  /** an extension ran past the end of the extension list: the walk stopped there */
  truncated = false
  /** signature_algorithms_cert (50) was seen before the walk ended */
  sigalgsCert = false
  /** server_name (0) and ALPN (16): the first of each, as OpenSSL reads one; offset of its body and its length */
  sni = -1
  sniLength = 0
  alpn = -1
  alpnLength = 0
  /** supported_versions (43), supported_groups (10), ec_point_formats (11), signature_algorithms (13): the last */
  versions = -1
  versionsLength = 0
  groups = -1
  groupsLength = 0
  points = -1
  sigalgs = -1
  sigalgsLength = 0
}

/** The layout of the body walked last: one per process, so a walk allocates nothing. */
const LAYOUT = new HelloLayout()

/**
 * walkHello walks a ClientHello body once and returns its layout: the module's one HelloLayout, valid until the next
 * walk. A body walked last is not walked again (so read it synchronously, as the accept path does).
 */
export function walkHello(hello: Buffer): HelloLayout {
  const l = LAYOUT
  if (l.of === hello) return l
  l.of = hello
  l.valid = l.compression = l.truncated = l.sigalgsCert = false
  l.suitesFrom = l.suitesTo = 0
  l.sni = l.alpn = l.versions = l.groups = l.points = l.sigalgs = -1
  l.sniLength = l.alpnLength = l.versionsLength = l.groupsLength = l.sigalgsLength = 0
  if (hello.length < 2 + 32 + 1) return l // legacy_version, random, legacy_session_id's length
  let p = 2 + 32
  p += 1 + hello[p]! // legacy_session_id
  if (hello.length < p + 2) return l
  l.valid = true
  l.suitesFrom = p + 2
  l.suitesTo = Math.min(hello.length, p + 2 + ((hello[p]! << 8) | hello[p + 1]!))
  p = l.suitesTo
  if (hello.length < p + 1) return l
  l.compression = true
  p += 1 + hello[p]! // legacy_compression_methods
  if (hello.length < p + 2) return l
  const end = Math.min(hello.length, p + 2 + ((hello[p]! << 8) | hello[p + 1]!))
  p += 2
  while (p + 4 <= end) {
    const type = (hello[p]! << 8) | hello[p + 1]!
    const length = (hello[p + 2]! << 8) | hello[p + 3]!
    p += 4
    if (p + length > end) {
      l.truncated = true
      return l
    }
    switch (type) {
      case 0:
        if (l.sni < 0) {
          l.sni = p
          l.sniLength = length
        }
        break
      case 16:
        if (l.alpn < 0) {
          l.alpn = p
          l.alpnLength = length
        }
        break
      case 43:
        l.versions = p
        l.versionsLength = length
        break
      case 10:
        l.groups = p
        l.groupsLength = length
        break
      case 11:
        l.points = p
        break
      case 13:
        l.sigalgs = p
        l.sigalgsLength = length
        break
      case 50:
        l.sigalgsCert = true
        break
    }
    p += length
  }
  return l
}

/** readAlpn reads the application_layer_protocol_negotiation extension (16): a list of length-prefixed names. */
function readAlpn(hello: Buffer, layout: HelloLayout): string[] | undefined {
  const from = layout.alpn
  if (from < 0 || layout.alpnLength < 2) return undefined
  const stop = from + layout.alpnLength
  const end = Math.min(stop, from + 2 + hello.readUInt16BE(from))
  const out: string[] = []
  for (let q = from + 2; q < end; ) {
    const length = hello[q]!
    if (q + 1 + length > end) break
    out.push(hello.toString("latin1", q + 1, q + 1 + length))
    q += 1 + length
  }
  return out
}

/** readServerName reads the host_name of the server_name extension (0; RFC 6066 §3). */
function readServerName(hello: Buffer, layout: HelloLayout): string | undefined {
  const from = layout.sni
  if (from < 0) return undefined
  const stop = from + layout.sniLength
  // server_name_list: list length, then entries of (type, length, name); host_name is type 0.
  for (let q = from + 2; q + 3 <= stop; ) {
    const nameType = hello[q]!
    const nameLength = (hello[q + 1]! << 8) | hello[q + 2]!
    q += 3
    if (q + nameLength > stop) return undefined
    if (nameType === 0) return hello.toString("latin1", q, q + nameLength)
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
  return new Promise((resolve) => peekClientHelloThen(socket, timeoutMs, withAlpn, sink, resolveScan, resolve))
}

function resolveScan(_socket: net.Socket, hello: HelloScan, resolve: unknown): void {
  ;(resolve as (hello: HelloScan) => void)(hello)
}

/** PeekDone hears how a peek of `socket` ended, with the `arg` the peek was given. */
export type PeekDone = (socket: net.Socket, hello: HelloScan, arg: unknown) => void

/** Peek: one ClientHello read in progress, kept on its socket: the handlers are module-level functions. */
interface Peek {
  buffered: Buffer
  timer: ReturnType<typeof setTimeout> | undefined
  withAlpn: boolean
  sink: HelloSink | undefined
  done: PeekDone
  arg: unknown
}
const kPeek = Symbol("portcullis.peek")
type Peeking = net.Socket & { [kPeek]?: Peek | undefined }
const EMPTY = Buffer.alloc(0)

/**
 * peekClientHelloThen is peekClientHello for the accept path: `done(socket, hello, arg)` is called once, and the peek
 * costs one small object (no promise, no closures). timeoutMs 0: no timer of its own (the caller's deadline closes
 * the socket, which ends the peek).
 */
export function peekClientHelloThen(
  socket: net.Socket,
  timeoutMs: number,
  withAlpn: boolean,
  sink: HelloSink | undefined,
  done: PeekDone,
  arg?: unknown,
): void {
  const peek: Peek = {
    buffered: EMPTY,
    timer: timeoutMs > 0 ? setTimeout(onPeekTimeout, timeoutMs, socket as Peeking) : undefined,
    withAlpn,
    sink,
    done,
    arg,
  }
  ;(socket as Peeking)[kPeek] = peek
  socket.on("data", onPeekData)
  socket.on("end", onPeekStop)
  socket.on("close", onPeekStop)
  socket.on("error", onPeekStop)
  // A socket someone paused (the PROXY header reader leaves it so) does not flow again on a new 'data'
  // listener alone: without this the peek would wait for the deadline.
  socket.resume()
}

function onPeekData(this: Peeking, chunk: Buffer): void {
  const peek = this[kPeek]
  if (peek === undefined) return
  const buffered = peek.buffered.length === 0 ? chunk : Buffer.concat([peek.buffered, chunk])
  peek.buffered = buffered
  const scan = scanClientHello(buffered, peek.withAlpn, peek.sink)
  if (scan.done || buffered.length > MAX_HELLO_BYTES) finishPeek(this, scan)
}

function onPeekStop(this: Peeking): void {
  finishPeek(this, { done: true })
}

function onPeekTimeout(socket: Peeking): void {
  finishPeek(socket, { done: true })
}

/** finishPeek puts the bytes back, leaves the socket paused with no listeners of ours, and reports the result. */
function finishPeek(socket: Peeking, hello: HelloScan): void {
  const peek = socket[kPeek]
  if (peek === undefined) return
  socket[kPeek] = undefined
  clearTimeout(peek.timer)
  socket.off("data", onPeekData)
  socket.off("end", onPeekStop)
  socket.off("close", onPeekStop)
  socket.off("error", onPeekStop)
  socket.pause()
  if (peek.buffered.length > 0 && !socket.destroyed) socket.unshift(peek.buffered)
  peek.done(socket, hello, peek.arg)
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
  const l = walkHello(hello)
  if (!l.valid) return false
  const legacy = (hello[0]! << 8) | hello[1]!
  const legacyIndex = versionIndex(legacy)
  let word0 = (legacyIndex < 0 ? VERSION_OTHER : legacyIndex) << OFFER_LEGACY_SHIFT
  for (let q = l.suitesFrom; q + 2 <= l.suitesTo; q += 2) {
    const code = (hello[q]! << 8) | hello[q + 1]!
    if (isGrease(code)) continue
    const i = CIPHER_INDEX[code]!
    const bit = i === 0 ? CIPHER_WORDS * 32 - 1 : i - 1
    out[at + 3 + (bit >>> 5)]! |= 1 << (bit & 31)
  }
  let versions = 0
  let p = l.versions
  if (p >= 0 && l.versionsLength >= 1) {
    // supported_versions: a one-byte length, then 2-byte versions.
    word0 |= OFFER_HAS_VERSIONS
    versions = codeList(hello, p + 1, Math.min(p + 1 + hello[p]!, p + l.versionsLength), versionBits)
  }
  p = l.groups
  if (p >= 0 && l.groupsLength >= 2) {
    word0 |= OFFER_HAS_GROUPS
    out[at + 1] = codeList(
      hello,
      p + 2,
      Math.min(p + 2 + ((hello[p]! << 8) | hello[p + 1]!), p + l.groupsLength),
      GROUP_INDEX,
    )
  }
  p = l.sigalgs
  if (p >= 0 && l.sigalgsLength >= 2) {
    word0 |= OFFER_HAS_SIGALGS
    out[at + 2] = codeList(
      hello,
      p + 2,
      Math.min(p + 2 + ((hello[p]! << 8) | hello[p + 1]!), p + l.sigalgsLength),
      SIGALG_INDEX,
    )
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
