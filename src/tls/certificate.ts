/** @module certificate: LoadedCertificate, the one shape every certificate source returns, and its parsing. */
import { createPrivateKey, type KeyObject, X509Certificate } from "node:crypto"
import { errorMessage, TlsError } from "../core/errors.ts"
import { Secret } from "../core/secret.ts"

/** KeyType is the algorithm of a certificate's key, as OpenSSL picks by the client's signature algorithms. */
export type KeyType = "ecdsa" | "rsa" | "ed25519" | "ed448" | "other"

/** LoadedCertificate is a parsed certificate chain with its private key, ready to go into a SecureContext. */
export interface LoadedCertificate {
  /** where it came from, for messages: a file path, or "self-signed:<path>" */
  source: string
  /** the names it serves: subjectAltName DNS names (lower case), else the subject CN */
  names: string[]
  /** the leaf then its intermediates, PEM */
  chainPem: string
  key: Secret<string>
  keyType: KeyType
  leaf: X509Certificate
  /** every certificate in the file, leaf first */
  chain: X509Certificate[]
  notAfter: Date
  fingerprint256: string
  /**
   * Set on the stand-in for names waiting for their first ACME certificate: "self_signed" serves it, "refuse"
   * answers their handshakes with an unrecognized_name alert instead (acme.while_pending).
   */
  pending?: "self_signed" | "refuse"
}

/** CertificateStatus is what status() and `portcullis certs` show: no key material. */
export interface CertificateStatus {
  names: string[]
  keyType: KeyType
  notAfter: string
  fingerprint256: string
  source: string
}

const PEM_CERT = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g

/** parseCertificate builds a LoadedCertificate from PEM text; `what` names the certificate in error messages. */
export function parseCertificate(
  chainPem: string,
  keyPem: string,
  what: string,
  keyWhat = "private key",
  keys: { cert?: string; key?: string } = {},
): LoadedCertificate {
  const blocks = chainPem.match(PEM_CERT) ?? []
  if (blocks.length === 0) throw loadError(what, `no PEM certificate found in ${what}`, undefined, keys.cert)
  let chain: X509Certificate[]
  try {
    chain = blocks.map((block) => new X509Certificate(block))
  } catch (err) {
    throw loadError(what, `parsing ${what}: ${errorMessage(err)}`, err, keys.cert)
  }
  let key: KeyObject
  try {
    key = createPrivateKey(keyPem)
  } catch (err) {
    throw loadError(what, `parsing ${keyWhat}: ${errorMessage(err)}`, err, keys.key)
  }
  const leaf = chain[0]!
  if (!leaf.checkPrivateKey(key))
    throw loadError(what, `${keyWhat} does not match the certificate`, undefined, keys.key)
  return {
    source: what,
    names: certificateNames(leaf),
    chainPem: blocks.join("\n") + "\n",
    key: new Secret(keyPem),
    keyType: keyTypeOf(key),
    leaf,
    chain,
    notAfter: new Date(leaf.validTo),
    fingerprint256: leaf.fingerprint256,
  }
}

/**
 * TlsConfigError is a TlsError that names the config key it is about ("cert", "key", "self_signed", "client_auth.ca"),
 * relative to the certificate entry or the listener's tls section, so `check` can point at that key's line.
 */
export class TlsConfigError extends TlsError {
  readonly configKey: string | undefined

  constructor(code: string, message: string, configKey: string | undefined, options: { cause?: unknown } = {}) {
    super(code, message, options)
    this.configKey = configKey
  }
}

/**
 * loadError is the TlsError every source throws: `loading certificate <what>: <detail>`; `key` is the config key of
 * the entry it is about (a file source's "cert" or "key").
 */
export function loadError(what: string, detail: string, cause?: unknown, key?: string): TlsConfigError {
  return new TlsConfigError("PC_TLS_CERT_LOAD", `loading certificate ${what}: ${detail}`, key, { cause })
}

/** certificateNames gives the subjectAltName DNS names (lower case, no trailing dot), else the subject CN. */
export function certificateNames(cert: X509Certificate): string[] {
  const names: string[] = []
  // Node renders the SAN as `DNS:a.example, IP Address:127.0.0.1`, JSON-quoting entries with unusual characters.
  const san = cert.subjectAltName ?? ""
  for (const match of san.matchAll(/(?:^|, )DNS:("(?:[^"\\]|\\.)*"|[^,]*)/g)) {
    const raw = match[1]!
    const name = raw.startsWith('"') ? (JSON.parse(raw) as string) : raw
    names.push(normalizeName(name))
  }
  if (names.length > 0) return [...new Set(names)]
  const cn = /^CN=(.*)$/m.exec(cert.subject)?.[1]
  return cn ? [normalizeName(cn)] : []
}

/** normalizeName makes a host name comparable: lower case, no trailing dot. */
export function normalizeName(name: string): string {
  const lower = name.trim().toLowerCase()
  return lower.endsWith(".") ? lower.slice(0, -1) : lower
}

/** certificateStatus is the key-free snapshot of a certificate. */
export function certificateStatus(cert: LoadedCertificate): CertificateStatus {
  return {
    names: [...cert.names],
    keyType: cert.keyType,
    notAfter: cert.notAfter.toISOString(),
    fingerprint256: cert.fingerprint256,
    source: cert.source,
  }
}

function keyTypeOf(key: KeyObject): KeyType {
  switch (key.asymmetricKeyType) {
    case "ec":
      return "ecdsa"
    case "rsa":
    case "rsa-pss":
      return "rsa"
    case "ed25519":
      return "ed25519"
    case "ed448":
      return "ed448"
    default:
      return "other"
  }
}
