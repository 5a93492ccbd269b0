/** @module policy: a listener's TLS policy (versions, ciphers, groups, ALPN, client certificates) as Node TLS options. */
import { constants } from "node:crypto"
import { readFileSync } from "node:fs"
import tls from "node:tls"
import type { ListenerTlsConfig } from "../config/schema.ts"
import { errorCode, errorMessage } from "../core/errors.ts"
import { TlsConfigError } from "./certificate.ts"

type TlsVersion = "TLSv1" | "TLSv1.1" | "TLSv1.2" | "TLSv1.3"
type Profile = ListenerTlsConfig["profile"]

const VERSION_ORDER: Record<TlsVersion, number> = { TLSv1: 0, "TLSv1.1": 1, "TLSv1.2": 2, "TLSv1.3": 3 }

/** TLS 1.3 suites of Mozilla's guidelines (the same for every profile). */
const TLS13_SUITES = "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256"

/** Mozilla intermediate, ECDHE only (no DHE: we configure no DH parameters): forward secrecy and AEAD, no CBC. */
const INTERMEDIATE_CIPHERS = [
  "ECDHE-ECDSA-AES128-GCM-SHA256",
  "ECDHE-RSA-AES128-GCM-SHA256",
  "ECDHE-ECDSA-AES256-GCM-SHA384",
  "ECDHE-RSA-AES256-GCM-SHA384",
  "ECDHE-ECDSA-CHACHA20-POLY1305",
  "ECDHE-RSA-CHACHA20-POLY1305",
].join(":")

/** Mozilla old: intermediate plus the CBC and static-RSA suites old clients need (still no DHE). */
const OLD_CIPHERS = [
  INTERMEDIATE_CIPHERS,
  "ECDHE-ECDSA-AES128-SHA256",
  "ECDHE-RSA-AES128-SHA256",
  "ECDHE-ECDSA-AES128-SHA",
  "ECDHE-RSA-AES128-SHA",
  "ECDHE-ECDSA-AES256-SHA384",
  "ECDHE-RSA-AES256-SHA384",
  "ECDHE-ECDSA-AES256-SHA",
  "ECDHE-RSA-AES256-SHA",
  "AES128-GCM-SHA256",
  "AES256-GCM-SHA384",
  "AES128-SHA256",
  "AES256-SHA256",
  "AES128-SHA",
  "AES256-SHA",
  "DES-CBC3-SHA",
].join(":")

interface ProfileDefaults {
  minVersion: TlsVersion
  ciphers: string
  /**
   * The server's suite order wins under intermediate and old; the client chooses under modern (TLS 1.3 only, every
   * suite strong). Mozilla lets intermediate clients choose too, but a TLS 1.2 server without an order is what
   * testssl rates HIGH ("NOT a cipher order configured"); with SSL_OP_PRIORITIZE_CHACHA a client that puts
   * ChaCha20 first (no AES hardware) still gets it.
   */
  honorCipherOrder: boolean
}

const PROFILES: Record<Profile, ProfileDefaults> = {
  modern: { minVersion: "TLSv1.3", ciphers: INTERMEDIATE_CIPHERS, honorCipherOrder: false },
  intermediate: { minVersion: "TLSv1.2", ciphers: INTERMEDIATE_CIPHERS, honorCipherOrder: true },
  old: { minVersion: "TLSv1", ciphers: OLD_CIPHERS, honorCipherOrder: true },
}

/** HYBRID_PQ_GROUP is offered first when this Node's OpenSSL (3.5+) knows it; checked once at module load. */
const HYBRID_PQ_GROUP = "X25519MLKEM768"
export const SUPPORTS_MLKEM = groupSupported(HYBRID_PQ_GROUP)

function groupSupported(group: string): boolean {
  try {
    tls.createSecureContext({ ecdhCurve: group })
    return true
  } catch {
    return false
  }
}

/** DEFAULT_GROUPS are the key exchange groups when the config names none. */
export const DEFAULT_GROUPS: readonly string[] = [
  ...(SUPPORTS_MLKEM ? [HYBRID_PQ_GROUP] : []),
  "X25519",
  "P-256",
  "P-384",
]

/** ServerTlsOptions are the options for tls.createServer and tls.createSecureContext. */
export type ServerTlsOptions = tls.TlsOptions & tls.SecureContextOptions

/**
 * serverTlsOptions turns a listener's TLS config into Node TLS options: the profile's versions, ciphers and
 * groups, with min_version, max_version, ciphers, ciphersuites and groups overriding it, plus ALPN and mTLS.
 * Reads the client_auth CA and CRL files (config time only).
 */
export function serverTlsOptions(config: ListenerTlsConfig, engine: "http" | "tcp"): ServerTlsOptions {
  const profile = PROFILES[config.profile]
  const minVersion = config.min_version ?? profile.minVersion
  const maxVersion = config.max_version ?? "TLSv1.3"
  if (VERSION_ORDER[minVersion] > VERSION_ORDER[maxVersion]) {
    throw new TlsConfigError(
      "PC_TLS_POLICY",
      `tls policy: min_version ${minVersion} is above max_version ${maxVersion}`,
      config.min_version === undefined ? "max_version" : "min_version",
    )
  }
  let cipherList = config.ciphers ?? profile.ciphers
  // OpenSSL 3 at its default security level 1 refuses the SHA-1 signatures TLS 1.0 and 1.1 need.
  if (VERSION_ORDER[minVersion] < VERSION_ORDER["TLSv1.2"] && !/@SECLEVEL=/.test(cipherList)) {
    cipherList += ":@SECLEVEL=0"
  }
  // Node splits `ciphers`: TLS_* names become the TLS 1.3 suites, the rest the TLS 1.2-and-below list.
  const suites = config.ciphersuites ?? TLS13_SUITES
  const options: ServerTlsOptions = {
    minVersion,
    maxVersion,
    ciphers: `${suites}:${cipherList}`,
    ecdhCurve: (config.groups ?? DEFAULT_GROUPS).join(":"),
    honorCipherOrder: profile.honorCipherOrder,
    // Client-initiated TLS 1.2 renegotiation costs the server a full handshake per request and buys the client
    // nothing here (nginx and HAProxy refuse it too): OpenSSL answers the first one with a no_renegotiation alert.
    // Node alone would allow three per 10 minutes (tls.CLIENT_RENEG_LIMIT). TLS 1.3 has no renegotiation.
    secureOptions:
      constants.SSL_OP_NO_RENEGOTIATION | (config.profile === "intermediate" ? constants.SSL_OP_PRIORITIZE_CHACHA : 0),
  }
  const alpn = config.alpn ?? (engine === "http" ? ["h2", "http/1.1"] : undefined)
  if (alpn && alpn.length > 0) options.ALPNProtocols = [...alpn]
  const clientAuth = config.client_auth
  if (clientAuth && clientAuth.mode !== "none") {
    options.requestCert = true
    options.rejectUnauthorized = clientAuth.mode === "require"
    options.ca = readPem("client_auth ca", clientAuth.ca!, "client_auth.ca")
    if (clientAuth.crl) options.crl = readPem("client_auth crl", clientAuth.crl, "client_auth.crl")
  } else {
    options.requestCert = false
    options.rejectUnauthorized = false
  }
  return options
}

function readPem(what: string, path: string, key: string): string {
  try {
    return readFileSync(path, "utf8")
  } catch (err) {
    const code = errorCode(err)
    throw new TlsConfigError(
      "PC_TLS_POLICY",
      `loading ${what} ${path}: reading ${path}: ${code === "UNKNOWN" ? errorMessage(err) : code}`,
      key,
      { cause: err },
    )
  }
}
