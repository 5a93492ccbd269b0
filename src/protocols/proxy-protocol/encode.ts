/**
 * @module encode: encodes PROXY protocol v1/v2 headers that tell a backend who the client is (haproxy's
 * proxy-protocol.txt). protocols/ holds what both sides speak: the listeners read PROXY headers, the dialer and the
 * tcp engine write them.
 */
import { isIPv4, isIPv6 } from "node:net"
import type { TLSSocket } from "node:tls"
import { PortcullisError } from "../../core/errors.ts"
import { parseIPv4, parseIPv6 } from "./ip.ts"
import {
  crc32c,
  PP2_CLIENT_CERT_CONN,
  PP2_CLIENT_CERT_SESS,
  PP2_CLIENT_SSL,
  PP2_SUBTYPE_SSL_CIPHER,
  PP2_SUBTYPE_SSL_CN,
  PP2_SUBTYPE_SSL_KEY_ALG,
  PP2_SUBTYPE_SSL_SIG_ALG,
  PP2_SUBTYPE_SSL_VERSION,
  PP2_TYPE_ALPN,
  PP2_TYPE_AUTHORITY,
  PP2_TYPE_CRC32C,
  PP2_TYPE_NETNS,
  PP2_TYPE_SSL,
  PP2_TYPE_UNIQUE_ID,
  type ProxyAddress,
  type ProxyTlvs,
  V2_SIGNATURE,
} from "./parse.ts"

export type { ProxyAddress, ProxySslInfo, ProxyTlv, ProxyTlvs } from "./parse.ts"

/** ProxyEndpoints are the client's address (source) and the address it connected to (destination). */
export interface ProxyEndpoints {
  source: ProxyAddress
  destination: ProxyAddress
}

/** EncodeV2Options: add a PP2_TYPE_CRC32C checksum over the whole header. */
export interface EncodeV2Options {
  crc32c?: boolean
}

type Family = { kind: "inet" | "inet6"; source: string; destination: string } | { kind: "unknown" }

/**
 * familyOf picks the header family: both IPv4 (IPv4-mapped IPv6 counts as IPv4) -> inet; both IPv6 -> inet6; one of
 * each -> inet6 with the IPv4 one written as ::ffff:a.b.c.d (RFC 4291 §2.5.5.2); anything else -> unknown.
 */
function familyOf(info: ProxyEndpoints): Family {
  const src = unmap(info.source.address)
  const dst = unmap(info.destination.address)
  const src4 = isIPv4(src)
  const dst4 = isIPv4(dst)
  if (src4 && dst4) return { kind: "inet", source: src, destination: dst }
  const src6 = !src4 && isIPv6(src) && !src.includes("%")
  const dst6 = !dst4 && isIPv6(dst) && !dst.includes("%")
  if ((src4 || src6) && (dst4 || dst6)) {
    return { kind: "inet6", source: src4 ? `::ffff:${src}` : src, destination: dst4 ? `::ffff:${dst}` : dst }
  }
  return { kind: "unknown" }
}

function unmap(address: string): string {
  return address.length > 7 && address.slice(0, 7).toLowerCase() === "::ffff:" && isIPv4(address.slice(7))
    ? address.slice(7)
    : address
}

function checkPort(port: number): number {
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    throw new PortcullisError("PC_PROXY_HEADER_ENCODE", `proxy protocol: ${port} is not a valid port`)
  }
  return port
}

/** encodeProxyV1 encodes "PROXY TCP4|TCP6 src dst sport dport\r\n", or "PROXY UNKNOWN\r\n" when the addresses are not IP. */
export function encodeProxyV1(info: ProxyEndpoints): Buffer {
  const family = familyOf(info)
  if (family.kind === "unknown") return Buffer.from("PROXY UNKNOWN\r\n", "latin1")
  const proto = family.kind === "inet" ? "TCP4" : "TCP6"
  const line = `PROXY ${proto} ${family.source} ${family.destination} ${checkPort(info.source.port)} ${checkPort(info.destination.port)}\r\n`
  return Buffer.from(line, "latin1")
}

/** encodeProxyV2 encodes a binary PROXY header (command PROXY, TCP over INET/INET6, or UNSPEC when not IP) with the given TLVs. */
export function encodeProxyV2(info: ProxyEndpoints, tlvs: ProxyTlvs = {}, options: EncodeV2Options = {}): Buffer {
  const family = familyOf(info)
  const tlvBytes = encodeTlvs(tlvs, options.crc32c === true)
  const addrLength = family.kind === "inet" ? 12 : family.kind === "inet6" ? 36 : 0
  const bodyLength = addrLength + tlvBytes.length
  if (bodyLength > 0xffff)
    throw new PortcullisError("PC_PROXY_HEADER_ENCODE", `proxy protocol: TLVs too long (${bodyLength} bytes)`)
  const out = Buffer.alloc(16 + bodyLength)
  V2_SIGNATURE.copy(out, 0)
  out[12] = 0x21 // version 2, command PROXY
  out[13] = family.kind === "inet" ? 0x11 : family.kind === "inet6" ? 0x21 : 0x00 // family << 4 | STREAM
  out.writeUInt16BE(bodyLength, 14)
  if (family.kind === "inet") {
    writeIPv4(out, 16, family.source)
    writeIPv4(out, 20, family.destination)
    out.writeUInt16BE(checkPort(info.source.port), 24)
    out.writeUInt16BE(checkPort(info.destination.port), 26)
  } else if (family.kind === "inet6") {
    writeIPv6(out, 16, family.source)
    writeIPv6(out, 32, family.destination)
    out.writeUInt16BE(checkPort(info.source.port), 48)
    out.writeUInt16BE(checkPort(info.destination.port), 50)
  }
  tlvBytes.copy(out, 16 + addrLength)
  if (options.crc32c) {
    // The CRC32C TLV is written last with a zero value; §2.2.5: the checksum covers the header with that field zeroed.
    out.writeUInt32BE(crc32c(out), out.length - 4)
  }
  return out
}

/**
 * encodeProxyV2Local encodes a v2 header with command LOCAL and no addresses (§2.2: the connection was made by the
 * proxy on its own behalf, e.g. a health check); the receiver uses the real peer address.
 */
export function encodeProxyV2Local(): Buffer {
  const out = Buffer.alloc(16)
  V2_SIGNATURE.copy(out, 0)
  out[12] = 0x20 // version 2, command LOCAL
  out[13] = 0x00 // AF_UNSPEC, UNSPEC
  return out
}

function tlv(type: number, value: Buffer): Buffer {
  if (value.length > 0xffff)
    throw new PortcullisError("PC_PROXY_HEADER_ENCODE", `proxy protocol: TLV 0x${type.toString(16)} too long`)
  const head = Buffer.allocUnsafe(3)
  head[0] = type
  head.writeUInt16BE(value.length, 1)
  return Buffer.concat([head, value])
}

function encodeTlvs(tlvs: ProxyTlvs, withCrc: boolean): Buffer {
  const parts: Buffer[] = []
  if (tlvs.alpn) parts.push(tlv(PP2_TYPE_ALPN, Buffer.from(tlvs.alpn, "latin1")))
  if (tlvs.authority) parts.push(tlv(PP2_TYPE_AUTHORITY, Buffer.from(tlvs.authority, "utf8")))
  if (tlvs.uniqueId) {
    if (tlvs.uniqueId.length > 128)
      throw new PortcullisError("PC_PROXY_HEADER_ENCODE", "proxy protocol: UNIQUE_ID longer than 128 bytes")
    parts.push(tlv(PP2_TYPE_UNIQUE_ID, tlvs.uniqueId))
  }
  if (tlvs.ssl) {
    const { ssl } = tlvs
    const head = Buffer.alloc(5)
    head[0] = ssl.client
    head.writeUInt32BE(ssl.verify >>> 0, 1)
    const sub: Buffer[] = [head]
    if (ssl.version) sub.push(tlv(PP2_SUBTYPE_SSL_VERSION, Buffer.from(ssl.version, "latin1")))
    if (ssl.cn) sub.push(tlv(PP2_SUBTYPE_SSL_CN, Buffer.from(ssl.cn, "utf8")))
    if (ssl.cipher) sub.push(tlv(PP2_SUBTYPE_SSL_CIPHER, Buffer.from(ssl.cipher, "latin1")))
    if (ssl.sigAlg) sub.push(tlv(PP2_SUBTYPE_SSL_SIG_ALG, Buffer.from(ssl.sigAlg, "latin1")))
    if (ssl.keyAlg) sub.push(tlv(PP2_SUBTYPE_SSL_KEY_ALG, Buffer.from(ssl.keyAlg, "latin1")))
    parts.push(tlv(PP2_TYPE_SSL, Buffer.concat(sub)))
  }
  if (tlvs.netns) parts.push(tlv(PP2_TYPE_NETNS, Buffer.from(tlvs.netns, "latin1")))
  for (const other of tlvs.other ?? []) parts.push(tlv(other.type, other.value))
  if (withCrc) parts.push(tlv(PP2_TYPE_CRC32C, Buffer.alloc(4)))
  return Buffer.concat(parts)
}

function writeIPv4(out: Buffer, at: number, address: string): void {
  out.writeUInt32BE(parseIPv4(address), at)
}

function writeIPv6(out: Buffer, at: number, address: string): void {
  const groups = parseIPv6(address)!
  for (let i = 0; i < 8; i++) out.writeUInt16BE(groups[i]!, at + 2 * i)
}

/**
 * tlvsFromTlsSocket describes a client's TLS connection as v2 TLVs: ALPN, SNI (AUTHORITY), and the SSL TLV with the
 * protocol version, cipher, certificate flags, verify result (0 = verified or no certificate) and the verified CN.
 */
export function tlvsFromTlsSocket(socket: TLSSocket): ProxyTlvs {
  const tlvs: ProxyTlvs = {}
  if (socket.alpnProtocol) tlvs.alpn = socket.alpnProtocol
  const servername = (socket as TLSSocket & { servername?: string | false | null }).servername
  if (servername) tlvs.authority = servername
  const cert = socket.getPeerCertificate()
  const hasCert = cert !== null && typeof cert === "object" && Object.keys(cert).length > 0
  let client = PP2_CLIENT_SSL
  if (hasCert) {
    // CERT_SESS: a certificate was given at least once in this TLS session; CERT_CONN: on this very connection.
    client |= PP2_CLIENT_CERT_SESS
    if (!socket.isSessionReused()) client |= PP2_CLIENT_CERT_CONN
  }
  tlvs.ssl = { client, verify: hasCert && !socket.authorized ? 1 : 0 }
  const version = socket.getProtocol()
  if (version) tlvs.ssl.version = version
  const cipher = socket.getCipher()
  if (cipher?.name) tlvs.ssl.cipher = cipher.name
  if (hasCert && socket.authorized) {
    const cn = cert.subject?.CN as string | string[] | undefined
    const first = Array.isArray(cn) ? cn[0] : cn
    if (first) tlvs.ssl.cn = first
  }
  return tlvs
}
