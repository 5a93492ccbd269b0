/**
 * @module identity-headers: the headers that tell a backend who the client is (mTLS), in the listener's format:
 * X-Client-* (ours), RFC 9440 Client-Cert/Client-Cert-Chain, or Envoy's X-Forwarded-Client-Cert. Made once per
 * connection: every request on it carries the same values.
 */
import { createHash, type X509Certificate } from "node:crypto"
import { type ConnectionInfo, socketOf } from "../../core/connection-info.ts"

/** Every identity header of every format: a client's own copies are always dropped, whichever format is chosen. */
export const IDENTITY_HEADERS: ReadonlySet<string> = new Set([
  "x-client-cert",
  "x-client-cert-subject",
  "x-client-cert-fingerprint",
  "x-client-verify",
  "client-cert",
  "client-cert-chain",
  "x-forwarded-client-cert",
])

const NONE: readonly string[] = []
const kIdentity = Symbol("portcullis.identity-headers")
type WithIdentity = ConnectionInfo & { [kIdentity]?: readonly string[] }

/** identityHeaders is the flat [name, value, ...] list for this connection (memoised on its info). */
export function identityHeaders(info: ConnectionInfo): readonly string[] {
  const memo = (info as WithIdentity)[kIdentity]
  if (memo !== undefined) return memo
  const made =
    info.forwardFormat === "rfc9440" ? rfc9440(info) : info.forwardFormat === "xfcc" ? xfcc(info) : xClient(info)
  ;(info as WithIdentity)[kIdentity] = made
  return made
}

/** xClient: X-Client-Verify always (when client_auth is on), subject and fingerprint, the PEM with forward_cert. */
function xClient(info: ConnectionInfo): readonly string[] {
  const cert = info.clientCert
  if (!cert) return info.clientAuth ? ["x-client-verify", "NONE"] : NONE
  const out = ["x-client-verify", cert.verified ? "SUCCESS" : `FAILED:${cert.error ?? "unverified"}`]
  if (cert.subject) out.push("x-client-cert-subject", cert.subject)
  if (cert.fingerprint256) out.push("x-client-cert-fingerprint", cert.fingerprint256)
  if (info.forwardCert && cert.pem) out.push("x-client-cert", encodeURIComponent(cert.pem))
  return out
}

/** peerCertificate is the client's certificate as Node holds it, when it passed validation (else undefined). */
function peerCertificate(info: ConnectionInfo): X509Certificate | undefined {
  if (!info.clientCert?.verified) return undefined
  return socketOf(info)?.getPeerX509Certificate()
}

/**
 * rfc9440: Client-Cert is the DER certificate as a structured-field byte sequence (RFC 8941 §3.3.5, `:base64:`).
 * Only a certificate that passed validation is sent (RFC 9440 §2.4: the backend takes the header as the proxy's
 * word that the client holds that key). Client-Cert-Chain (optional in RFC 9440 §2.2) is not sent: Node does not
 * expose the chain a client sent on the server side (getPeerCertificate(true) has no issuerCertificate there).
 */
function rfc9440(info: ConnectionInfo): readonly string[] {
  const leaf = peerCertificate(info)
  if (!leaf) return NONE
  return ["client-cert", `:${leaf.raw.toString("base64")}:`]
}

/**
 * xfcc: Envoy's X-Forwarded-Client-Cert: By (our certificate's URI SAN, when it has one), Hash (SHA-256 of the DER,
 * hex), Cert (URL-encoded PEM, with forward_cert), Subject, URI and DNS (the client certificate's SANs). No Chain
 * (see rfc9440). Values with , ; = or " are quoted, quotes escaped. Only for a certificate that passed validation.
 */
function xfcc(info: ConnectionInfo): readonly string[] {
  const leaf = peerCertificate(info)
  if (!leaf) return NONE
  const parts: string[] = []
  const own = socketOf(info)?.getX509Certificate()
  for (const uri of sans(own, "URI")) parts.push(`By=${quote(uri)}`)
  parts.push(`Hash=${createHash("sha256").update(leaf.raw).digest("hex")}`)
  if (info.forwardCert) parts.push(`Cert="${encodeURIComponent(leaf.toString())}"`)
  parts.push(`Subject="${escapeQuoted(leaf.subject.replace(/\n/g, ","))}"`)
  for (const uri of sans(leaf, "URI")) parts.push(`URI=${quote(uri)}`)
  for (const dns of sans(leaf, "DNS")) parts.push(`DNS=${quote(dns)}`)
  return ["x-forwarded-client-cert", parts.join(";")]
}

/** sans lists a certificate's subjectAltName entries of one kind ("DNS", "URI"). */
function sans(cert: X509Certificate | undefined, kind: string): string[] {
  const text = cert?.subjectAltName
  if (!text) return []
  const prefix = `${kind}:`
  const out: string[] = []
  for (const entry of text.split(", ")) if (entry.startsWith(prefix)) out.push(entry.slice(prefix.length))
  return out
}

function escapeQuoted(value: string): string {
  return value.replace(/["\\]/g, (c) => `\\${c}`)
}

function quote(value: string): string {
  return /[,;="]/.test(value) ? `"${escapeQuoted(value)}"` : value
}
