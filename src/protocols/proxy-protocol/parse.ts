/**
 * @module parse: pure parsers for PROXY protocol v1 (text) and v2 (binary) headers, after haproxy's
 * doc/proxy-protocol.txt; shared by the listener (read-header.ts), the encoder's tests and the test decoder.
 */
import { isIPv4, isIPv6 } from "node:net"
import { ClientError } from "../../core/errors.ts"

/** V2_SIGNATURE opens every v2 header (proxy-protocol.txt §2.2). */
export const V2_SIGNATURE = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a])
/** V1_MAX_BYTES is the longest v1 line a receiver must accept, CRLF included (§2.1). */
export const V1_MAX_BYTES = 107
/** V2_DEFAULT_MAX_BYTES bounds a v2 header (16 fixed bytes + addresses + TLVs) unless the caller says otherwise. */
export const V2_DEFAULT_MAX_BYTES = 4096

/** PP2 TLV types (§2.2.7) and SSL sub-types and client flags (§2.2.5). */
export const PP2_TYPE_ALPN = 0x01
export const PP2_TYPE_AUTHORITY = 0x02
export const PP2_TYPE_CRC32C = 0x03
export const PP2_TYPE_NOOP = 0x04
export const PP2_TYPE_UNIQUE_ID = 0x05
export const PP2_TYPE_SSL = 0x20
export const PP2_SUBTYPE_SSL_VERSION = 0x21
export const PP2_SUBTYPE_SSL_CN = 0x22
export const PP2_SUBTYPE_SSL_CIPHER = 0x23
export const PP2_SUBTYPE_SSL_SIG_ALG = 0x24
export const PP2_SUBTYPE_SSL_KEY_ALG = 0x25
export const PP2_TYPE_NETNS = 0x30
export const PP2_CLIENT_SSL = 0x01
export const PP2_CLIENT_CERT_CONN = 0x02
export const PP2_CLIENT_CERT_SESS = 0x04

/** ProxyAddress is one end of the proxied connection. */
export interface ProxyAddress {
  address: string
  port: number
}

/** ProxySslInfo is the PP2_TYPE_SSL TLV: client flags, verify result (0 = verified or no certificate) and sub-TLVs. */
export interface ProxySslInfo {
  client: number
  verify: number
  version?: string
  cn?: string
  cipher?: string
  sigAlg?: string
  keyAlg?: string
}

/** ProxyTlv is one TLV we have no field for (custom 0xE0-0xEF types and the like), as raw bytes. */
export interface ProxyTlv {
  type: number
  value: Buffer
}

/** ProxyTlvs are the v2 TLVs we understand, plus the others as raw bytes. */
export interface ProxyTlvs {
  alpn?: string
  authority?: string
  uniqueId?: Buffer
  ssl?: ProxySslInfo
  netns?: string
  other?: ProxyTlv[]
}

/** ProxyHeader is everything one parsed header says; source/destination are absent for LOCAL, UNKNOWN, UNSPEC, UNIX. */
export interface ProxyHeader {
  version: 1 | 2
  command: "proxy" | "local"
  family: "inet" | "inet6" | "unix" | "unspec"
  transport: "stream" | "dgram" | "unspec"
  source?: ProxyAddress
  destination?: ProxyAddress
  tlvs: ProxyTlvs
  /** The PP2_TYPE_CRC32C value, present only when the header carried one (and it matched). */
  checksum?: number
}

/** ParsedProxyHeader is a complete header and how many bytes it took. */
export interface ParsedProxyHeader {
  header: ProxyHeader
  length: number
}

/** parseProxyHeader parses a v1 or v2 header at the start of buf: the header and its length, undefined if more bytes are needed; throws PC_PROXY_HEADER_INVALID. */
export function parseProxyHeader(buf: Buffer, maxBytes = V2_DEFAULT_MAX_BYTES): ParsedProxyHeader | undefined {
  if (buf.length === 0) return undefined
  if (buf[0] === 0x50) return parseV1(buf) // "P"
  if (buf[0] === 0x0d) return parseV2(buf, maxBytes)
  throw invalid("not a PROXY protocol header")
}

const V1_PREFIX = Buffer.from("PROXY ", "latin1")

/** parseV1 parses "PROXY TCP4|TCP6|UNKNOWN ...\r\n" (§2.1) at the start of buf, or returns undefined if incomplete. */
export function parseV1(buf: Buffer): ParsedProxyHeader | undefined {
  const prefix = Math.min(buf.length, V1_PREFIX.length)
  if (buf.compare(V1_PREFIX, 0, prefix, 0, prefix) !== 0) throw invalid('v1: expected "PROXY "')
  const limit = Math.min(buf.length, V1_MAX_BYTES)
  let end = -1
  for (let i = 0; i < limit; i++) {
    const c = buf[i]!
    if (c === 0x0d) {
      if (i + 1 >= buf.length) return undefined
      if (buf[i + 1] !== 0x0a) throw invalid("v1: CR not followed by LF")
      end = i
      break
    }
    // Only printable US-ASCII may appear before the CRLF.
    if (c < 0x20 || c > 0x7e) throw invalid(`v1: unexpected byte 0x${c.toString(16).padStart(2, "0")}`)
  }
  if (end === -1) {
    if (buf.length >= V1_MAX_BYTES) throw invalid(`v1: no CRLF within ${V1_MAX_BYTES} bytes`)
    return undefined
  }
  const length = end + 2
  if (length > V1_MAX_BYTES) throw invalid(`v1: no CRLF within ${V1_MAX_BYTES} bytes`)
  const fields = buf.toString("latin1", V1_PREFIX.length, end).split(" ")
  const proto = fields[0]
  if (proto === "UNKNOWN") {
    // §2.1: with UNKNOWN the receiver must ignore everything up to the CRLF.
    return { header: { version: 1, command: "proxy", family: "unspec", transport: "unspec", tlvs: {} }, length }
  }
  if (proto !== "TCP4" && proto !== "TCP6") throw invalid(`v1: unknown protocol ${JSON.stringify(proto)}`)
  if (fields.length !== 5) throw invalid(`v1: expected 5 fields after PROXY, got ${fields.length}`)
  const isFamily = proto === "TCP4" ? isIPv4 : isIPv6
  const [, src, dst, sport, dport] = fields as [string, string, string, string, string]
  for (const a of [src, dst]) {
    if (!isFamily(a) || a.includes("%")) throw invalid(`v1: ${JSON.stringify(a)} is not a valid ${proto} address`)
  }
  return {
    header: {
      version: 1,
      command: "proxy",
      family: proto === "TCP4" ? "inet" : "inet6",
      transport: "stream",
      source: { address: src, port: parsePort(sport) },
      destination: { address: dst, port: parsePort(dport) },
      tlvs: {},
    },
    length,
  }
}

/** parsePort reads a decimal port 0-65535 with no leading zeros (§2.1). */
function parsePort(text: string): number {
  if (!/^(0|[1-9][0-9]{0,4})$/.test(text)) throw invalid(`v1: ${JSON.stringify(text)} is not a valid port`)
  const port = Number(text)
  if (port > 65535) throw invalid(`v1: port ${port} is out of range`)
  return port
}

/** parseV2 parses a binary header (§2.2) at the start of buf, or returns undefined if incomplete. */
export function parseV2(buf: Buffer, maxBytes = V2_DEFAULT_MAX_BYTES): ParsedProxyHeader | undefined {
  const prefix = Math.min(buf.length, V2_SIGNATURE.length)
  if (buf.compare(V2_SIGNATURE, 0, prefix, 0, prefix) !== 0) throw invalid("v2: bad signature")
  if (buf.length < 16) return undefined
  const verCmd = buf[12]!
  if (verCmd >> 4 !== 2) throw invalid(`v2: unsupported version ${verCmd >> 4}`)
  const cmd = verCmd & 0x0f
  if (cmd > 1) throw invalid(`v2: unknown command ${cmd}`)
  const famProto = buf[13]!
  const fam = famProto >> 4
  const proto = famProto & 0x0f
  if (fam > 3) throw invalid(`v2: unknown address family ${fam}`)
  if (proto > 2) throw invalid(`v2: unknown transport ${proto}`)
  const bodyLength = buf.readUInt16BE(14)
  const length = 16 + bodyLength
  if (length > maxBytes) throw invalid(`v2: header of ${length} bytes exceeds the limit of ${maxBytes}`)
  if (buf.length < length) return undefined

  const family = (["unspec", "inet", "inet6", "unix"] as const)[fam]!
  const transport = (["unspec", "stream", "dgram"] as const)[proto]!
  const header: ProxyHeader = { version: 2, command: cmd === 0 ? "local" : "proxy", family, transport, tlvs: {} }
  const addrLength = fam === 1 ? 12 : fam === 2 ? 36 : fam === 3 ? 216 : 0
  if (bodyLength < addrLength) throw invalid(`v2: ${family} needs ${addrLength} address bytes, length is ${bodyLength}`)
  if (header.command === "proxy" && (fam === 1 || fam === 2) && proto !== 1) {
    throw invalid(`v2: ${family} over ${transport} cannot carry a TCP connection`)
  }
  if (fam === 1) {
    header.source = { address: ipv4Text(buf, 16), port: buf.readUInt16BE(24) }
    header.destination = { address: ipv4Text(buf, 20), port: buf.readUInt16BE(26) }
  } else if (fam === 2) {
    header.source = { address: ipv6Text(buf, 16), port: buf.readUInt16BE(48) }
    header.destination = { address: ipv6Text(buf, 32), port: buf.readUInt16BE(50) }
  }
  const checksumAt = parseTlvs(buf, 16 + addrLength, length, header)
  if (checksumAt !== -1) {
    const expected = buf.readUInt32BE(checksumAt)
    const copy = Buffer.from(buf.subarray(0, length))
    copy.writeUInt32BE(0, checksumAt)
    if (crc32c(copy) !== expected) throw invalid("v2: CRC32C checksum mismatch")
    header.checksum = expected
  }
  // §2.2: a LOCAL header's addresses are not to be used.
  if (header.command === "local") {
    delete header.source
    delete header.destination
  }
  return { header, length }
}

/** parseTlvs fills header.tlvs from buf[start, end); returns the CRC32C value offset, or -1. */
function parseTlvs(buf: Buffer, start: number, end: number, header: ProxyHeader): number {
  const tlvs = header.tlvs
  let checksumAt = -1
  let at = start
  while (at < end) {
    if (at + 3 > end) throw invalid("v2: truncated TLV header")
    const type = buf[at]!
    const len = buf.readUInt16BE(at + 1)
    const from = at + 3
    const to = from + len
    if (to > end) throw invalid(`v2: TLV 0x${type.toString(16)} overruns the header`)
    const value = buf.subarray(from, to)
    switch (type) {
      case PP2_TYPE_ALPN:
        tlvs.alpn = value.toString("latin1")
        break
      case PP2_TYPE_AUTHORITY:
        tlvs.authority = value.toString("utf8")
        break
      case PP2_TYPE_CRC32C:
        if (len !== 4) throw invalid("v2: CRC32C TLV must be 4 bytes")
        checksumAt = from
        break
      case PP2_TYPE_NOOP:
        break
      case PP2_TYPE_UNIQUE_ID:
        if (len > 128) throw invalid("v2: UNIQUE_ID TLV longer than 128 bytes")
        tlvs.uniqueId = Buffer.from(value)
        break
      case PP2_TYPE_SSL:
        tlvs.ssl = parseSsl(value)
        break
      case PP2_TYPE_NETNS:
        tlvs.netns = value.toString("latin1")
        break
      default:
        tlvs.other ??= []
        tlvs.other.push({ type, value: Buffer.from(value) })
    }
    at = to
  }
  return checksumAt
}

/** parseSsl reads the PP2_TYPE_SSL value: client (1 byte), verify (4 bytes), then sub-TLVs (§2.2.5). */
function parseSsl(value: Buffer): ProxySslInfo {
  if (value.length < 5) throw invalid("v2: SSL TLV shorter than 5 bytes")
  const ssl: ProxySslInfo = { client: value[0]!, verify: value.readUInt32BE(1) }
  let at = 5
  while (at < value.length) {
    if (at + 3 > value.length) throw invalid("v2: truncated SSL sub-TLV header")
    const type = value[at]!
    const to = at + 3 + value.readUInt16BE(at + 1)
    if (to > value.length) throw invalid(`v2: SSL sub-TLV 0x${type.toString(16)} overruns the SSL TLV`)
    const text = value.toString("utf8", at + 3, to)
    if (type === PP2_SUBTYPE_SSL_VERSION) ssl.version = text
    else if (type === PP2_SUBTYPE_SSL_CN) ssl.cn = text
    else if (type === PP2_SUBTYPE_SSL_CIPHER) ssl.cipher = text
    else if (type === PP2_SUBTYPE_SSL_SIG_ALG) ssl.sigAlg = text
    else if (type === PP2_SUBTYPE_SSL_KEY_ALG) ssl.keyAlg = text
    at = to
  }
  return ssl
}

function ipv4Text(buf: Buffer, at: number): string {
  return `${buf[at]}.${buf[at + 1]}.${buf[at + 2]}.${buf[at + 3]}`
}

/** ipv6Text formats 16 bytes the RFC 5952 way: lower case, the longest zero run (2+ groups) as "::", IPv4-mapped as ::ffff:a.b.c.d. */
export function ipv6Text(buf: Buffer, at: number): string {
  const groups: number[] = []
  for (let i = 0; i < 8; i++) groups.push(buf.readUInt16BE(at + 2 * i))
  if (
    groups[0] === 0 &&
    groups[1] === 0 &&
    groups[2] === 0 &&
    groups[3] === 0 &&
    groups[4] === 0 &&
    groups[5] === 0xffff
  ) {
    return `::ffff:${ipv4Text(buf, at + 12)}`
  }
  let bestStart = -1
  let bestLen = 1
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) {
      i++
      continue
    }
    let j = i
    while (j < 8 && groups[j] === 0) j++
    if (j - i > bestLen) {
      bestStart = i
      bestLen = j - i
    }
    i = j
  }
  const hex = groups.map((g) => g.toString(16))
  if (bestStart === -1) return hex.join(":")
  return `${hex.slice(0, bestStart).join(":")}::${hex.slice(bestStart + bestLen).join(":")}`
}

const CRC32C_TABLE = (() => {
  const table = new Uint32Array(256)
  for (let n = 0; n < 256; n++) {
    let c = n
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1
    table[n] = c >>> 0
  }
  return table
})()

/** crc32c computes the CRC-32C (Castagnoli) checksum that PP2_TYPE_CRC32C carries. */
export function crc32c(buf: Uint8Array): number {
  let crc = 0xffffffff
  for (let i = 0; i < buf.length; i++) crc = CRC32C_TABLE[(crc ^ buf[i]!) & 0xff]! ^ (crc >>> 8)
  return (crc ^ 0xffffffff) >>> 0
}

function invalid(message: string): ClientError {
  return new ClientError("PC_PROXY_HEADER_INVALID", `proxy protocol: ${message}`)
}
