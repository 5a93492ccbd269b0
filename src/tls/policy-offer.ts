/**
 * @module policy-offer: a TLS policy as the census sees it (versions, suites, groups, the certificates' keys as bit
 * masks over tls-codes) and judge(), which says whether a ClientHello's offer would be refused under it, and why.
 */
import type { X509Certificate } from "node:crypto"
import type { ListenerTlsConfig } from "../config/schema.ts"
import { serverTlsOptions } from "./policy.ts"
import {
  CIPHER_WORDS,
  CIPHERS,
  cipherByOpenSslName,
  GROUPS,
  groupByName,
  OTHER_BIT,
  SIGALGS,
  VERSION_OTHER,
} from "./tls-codes.ts"

/** RefusalReason: why a policy would refuse a client, in the vocabulary of the handshake failure reasons. */
export type RefusalReason = "no_shared_version" | "no_shared_cipher" | "no_shared_group" | "no_shared_sigalg"

/** Word 0 flags of an offer record (client-hello.ts readOffer writes them). */
const HAS_VERSIONS = 1 << 16
const HAS_GROUPS = 1 << 17
const HAS_SIGALGS = 1 << 18
const LEGACY_SHIFT = 8
const TLS12 = 3
const TLS13 = 4

/** PROFILE_NAMES: the shipped profiles the census judges besides the listener's current policy. */
const PROFILE_NAMES = ["modern", "intermediate", "old"] as const

/**
 * censusPolicies: the policies GET /tls/clients judges, by name: each shipped profile as it ships (no overrides,
 * the default groups) and `current`, the listener's effective policy (its profile with min/max_version, ciphers,
 * ciphersuites and groups applied), all with the certificates the listener serves now. Runs per admin request.
 */
export function censusPolicies(
  tlsConfig: ListenerTlsConfig,
  engine: "http" | "tcp",
  current: {
    minVersion?: string | undefined
    maxVersion?: string | undefined
    ciphers?: string | undefined
    ecdhCurve?: string | undefined
  },
  leaves: readonly X509Certificate[],
): Record<string, PolicyOffer> {
  const out: Record<string, PolicyOffer> = {}
  for (const profile of PROFILE_NAMES) {
    // client_auth is left out: it reads CA files and does not change what a ClientHello can negotiate.
    const options = serverTlsOptions({ certificates: tlsConfig.certificates, profile } as ListenerTlsConfig, engine)
    out[profile] = policyOffer(options, leaves)
  }
  out["current"] = policyOffer(current, leaves)
  return out
}

/** ServedKey: one certificate's key as signatures need it (an ECDSA key's curve binds TLS 1.3 schemes). */
export interface ServedKey {
  type: "ecdsa" | "rsa" | "ed25519" | "ed448" | "other"
  curve?: string | undefined
}

/** PolicyOffer: what one policy accepts, as masks over the tls-codes tables, plus what could not be judged. */
export interface PolicyOffer {
  minVersion: number
  maxVersion: number
  /** TLS 1.3 suites (words like the record's cipher words) */
  suites13: Uint32Array
  /** TLS 1.2-and-below suites usable with the served keys, kx and auth checked per suite in judge() */
  suites12: Uint32Array
  groups: number
  /** the served keys: which suites' auth and which signature schemes can be used */
  keys: readonly ServedKey[]
  /** SHA-1 signatures allowed (OpenSSL 3 needs @SECLEVEL=0 for them, which the old profile sets) */
  sha1: boolean
  /** what judge() skips because the policy names something the tables do not (an OpenSSL keyword, a new group) */
  unjudged: string[]
}

const VERSION_OF: Record<string, number> = { SSLv3: 0, TLSv1: 1, "TLSv1.1": 2, "TLSv1.2": 3, "TLSv1.3": 4 }

/** policyOffer reads Node's TLS options (policy.ts serverTlsOptions) into masks, with the served certificates. */
export function policyOffer(
  options: {
    minVersion?: string | undefined
    maxVersion?: string | undefined
    ciphers?: string | undefined
    ecdhCurve?: string | undefined
  },
  leaves: readonly X509Certificate[],
): PolicyOffer {
  const suites13 = new Uint32Array(CIPHER_WORDS)
  const suites12 = new Uint32Array(CIPHER_WORDS)
  const unjudged: string[] = []
  let sha1 = false
  for (const raw of (options.ciphers ?? "").split(":")) {
    const name = raw.trim()
    if (name === "") continue
    if (/^@SECLEVEL=0$/i.test(name)) {
      sha1 = true
      continue
    }
    const i = cipherByOpenSslName(name)
    if (i < 0 || name.startsWith("!") || name.startsWith("-") || name.startsWith("+")) {
      if (!unjudged.includes("ciphers")) unjudged.push("ciphers")
      continue
    }
    const target = CIPHERS[i]!.kx === "tls13" ? suites13 : suites12
    target[i >>> 5]! |= 1 << (i & 31)
  }
  let groups = 0
  for (const raw of (options.ecdhCurve ?? "").split(":")) {
    const name = raw.trim()
    if (name === "") continue
    const i = groupByName(name)
    if (i < 0) {
      if (!unjudged.includes("groups")) unjudged.push("groups")
      continue
    }
    groups |= 1 << i
  }
  return {
    minVersion: VERSION_OF[options.minVersion ?? "TLSv1.2"] ?? TLS12,
    maxVersion: VERSION_OF[options.maxVersion ?? "TLSv1.3"] ?? TLS13,
    suites13,
    suites12,
    groups: groups >>> 0,
    keys: leaves.map(servedKey),
    sha1,
    unjudged,
  }
}

function servedKey(leaf: X509Certificate): ServedKey {
  const key = leaf.publicKey
  switch (key.asymmetricKeyType) {
    case "ec":
      return { type: "ecdsa", curve: key.asymmetricKeyDetails?.namedCurve }
    case "rsa":
    case "rsa-pss":
      return { type: "rsa" }
    case "ed25519":
      return { type: "ed25519" }
    case "ed448":
      return { type: "ed448" }
    default:
      return { type: "other" }
  }
}

/**
 * judge says whether `policy` would refuse the client whose offer record starts at rec[at], and why, judging only
 * what the ClientHello and the policy decide (see docs/observability.md, "ClientHello census"):
 * 1. the version: the highest one both allow (with supported_versions, the intersection; without, legacy_version
 *    and any lower the server allows, as a TLS 1.2 server negotiates);
 * 2. TLS 1.3: a common suite, a common group (a HelloRetryRequest fixes a missing key share, not a missing group),
 *    and a signature scheme one served key can make (ECDSA schemes name the curve; RSA needs rsa_pss_rsae_*);
 * 3. TLS 1.2 and below: some suite both offer that the version allows, whose authentication a served key has,
 *    whose ECDHE key exchange has a common curve (or the client sent no supported_groups: RFC 8422 §4 lets the
 *    server pick), and, from TLS 1.2, whose signature the client's signature_algorithms allow (SHA-1 only under
 *    @SECLEVEL=0; no extension means SHA-1, RFC 5246 §7.4.1.4.1). Static RSA key exchange signs nothing.
 * The reason is the first check that leaves nothing: version, then cipher, then group, then sigalg.
 */
export function judge(policy: PolicyOffer, rec: Uint32Array, at: number): RefusalReason | undefined {
  const word0 = rec[at]!
  const version = negotiated(policy, word0)
  if (version < 0) return "no_shared_version"
  const clientGroups = rec[at + 1]!
  const clientSigalgs = rec[at + 2]!
  const groupsJudged = !policy.unjudged.includes("groups")
  if (version === TLS13) {
    if (!shares(policy.suites13, rec, at + 3)) return "no_shared_cipher"
    if (groupsJudged && (clientGroups & policy.groups) === 0) return "no_shared_group"
    if ((word0 & HAS_SIGALGS) === 0 || !signs(policy, clientSigalgs, true)) return "no_shared_sigalg"
    return undefined
  }
  const ciphersJudged = !policy.unjudged.includes("ciphers")
  const ecGroups = ecdheMask(policy.groups)
  const groupOk = !groupsJudged || (word0 & HAS_GROUPS) === 0 || (clientGroups & ecGroups) !== 0
  const sigalgOk = version < TLS12 || ((word0 & HAS_SIGALGS) === 0 ? policy.sha1 : signs(policy, clientSigalgs, false))
  let cipher = false
  let group = false
  for (let i = 0; i < CIPHERS.length; i++) {
    const suite = CIPHERS[i]!
    if (suite.kx === "tls13" || suite.kx === "scsv") continue
    if ((rec[at + 3 + (i >>> 5)]! & (1 << (i & 31))) === 0) continue
    if (ciphersJudged && (policy.suites12[i >>> 5]! & (1 << (i & 31))) === 0) continue
    if (suite.minVersion > version) continue
    // DHE needs DH parameters, which Portcullis never configures: OpenSSL skips those suites.
    if (suite.kx === "dhe") continue
    if (!policy.keys.some((k) => k.type === suite.auth)) continue
    cipher = true
    if (suite.kx === "rsa") return undefined
    if (!groupOk) continue
    group = true
    if (sigalgOk) return undefined
  }
  // An unknown suite the client offered may be one the policy's unjudged keywords allow: not counted as a refusal.
  if (!ciphersJudged && !cipher && (rec[at + 3 + CIPHER_WORDS - 1]! & (1 << OTHER_BIT)) !== 0) return undefined
  if (!cipher) return "no_shared_cipher"
  if (!group) return "no_shared_group"
  return "no_shared_sigalg"
}

/** negotiated is the version index the server would pick, or -1 when none is common. */
function negotiated(policy: PolicyOffer, word0: number): number {
  if ((word0 & HAS_VERSIONS) === 0) {
    const legacy = (word0 >>> LEGACY_SHIFT) & 0xf
    // A legacy_version above TLS 1.2 without supported_versions is negotiated as TLS 1.2 (RFC 8446 §4.2.1).
    const top = Math.min(legacy === VERSION_OTHER ? TLS12 : legacy, TLS12, policy.maxVersion)
    return top >= policy.minVersion ? top : -1
  }
  for (let v = policy.maxVersion; v >= policy.minVersion; v--) if ((word0 & (1 << v)) !== 0) return v
  return -1
}

function shares(policy: Uint32Array, rec: Uint32Array, from: number): boolean {
  for (let w = 0; w < CIPHER_WORDS; w++) if ((policy[w]! & rec[from + w]!) !== 0) return true
  return false
}

/** ecdheMask keeps the groups a TLS 1.2 ECDHE exchange can use (curves, not ffdhe or hybrids). */
function ecdheMask(groups: number): number {
  let mask = 0
  for (let i = 0; i < GROUPS.length; i++) if (GROUPS[i]!.ecdhe && (groups & (1 << i)) !== 0) mask |= 1 << i
  return mask
}

/** signs: one of the client's schemes can be made by one served key (TLS 1.3 rules when tls13). */
function signs(policy: PolicyOffer, clientSigalgs: number, tls13: boolean): boolean {
  for (let i = 0; i < SIGALGS.length; i++) {
    if ((clientSigalgs & (1 << i)) === 0) continue
    const s = SIGALGS[i]!
    if (tls13 && !s.tls13) continue
    if (s.sha1 && !policy.sha1) continue
    for (const k of policy.keys) {
      if (s.key !== k.type) continue
      if (s.key !== "ecdsa" || !tls13 || s.curve === k.curve) return true
    }
  }
  return false
}
