/**
 * @module tls-codes: the IANA TLS code points the ClientHello census knows by name (versions, cipher suites, groups,
 * signature algorithms), each at a fixed index so a hello is kept as a few bit masks. Anything else is "other".
 */

/** MAX_KNOWN caps each table: the census keeps one bit per known code in a fixed number of 32-bit words. */
export const CIPHER_WORDS = 4
const MAX_CIPHERS = CIPHER_WORDS * 32 - 1
const MAX_SMALL = 31

/** Version names as Node's getProtocol() spells them (the handshake metrics use the same). */
export const VERSIONS: readonly { code: number; name: string }[] = [
  { code: 0x0300, name: "SSLv3" },
  { code: 0x0301, name: "TLSv1" },
  { code: 0x0302, name: "TLSv1.1" },
  { code: 0x0303, name: "TLSv1.2" },
  { code: 0x0304, name: "TLSv1.3" },
]
/** VERSION_OTHER: the bit for a version code not in VERSIONS (a draft, a GREASE-like value we do not skip). */
export const VERSION_OTHER = 7

/** versionIndex maps a version code to its VERSIONS index (SSLv3 0 … TLS 1.3 4), or -1. */
export function versionIndex(code: number): number {
  return code >= 0x0300 && code <= 0x0304 ? code - 0x0300 : -1
}

/** How a TLS 1.2-and-below suite exchanges keys and authenticates (tls13: a TLS 1.3 suite, scsv: a signal). */
export type Kx = "tls13" | "ecdhe" | "dhe" | "rsa" | "scsv"
export type Auth = "ecdsa" | "rsa" | "dss" | "any"

/** CipherInfo: one suite, its IANA and OpenSSL names, and what it needs (minimum version, key exchange, key). */
export interface CipherInfo {
  code: number
  iana: string
  openssl: string
  kx: Kx
  auth: Auth
  /** the lowest version index (VERSIONS) it can be negotiated at: AEAD and SHA-2 suites need TLS 1.2 */
  minVersion: number
}

const V10 = 1
const V12 = 3
const V13 = 4

// [code, IANA name, OpenSSL name, kx, auth, min version]
const CIPHER_ROWS: readonly [number, string, string, Kx, Auth, number][] = [
  [0x1301, "TLS_AES_128_GCM_SHA256", "TLS_AES_128_GCM_SHA256", "tls13", "any", V13],
  [0x1302, "TLS_AES_256_GCM_SHA384", "TLS_AES_256_GCM_SHA384", "tls13", "any", V13],
  [0x1303, "TLS_CHACHA20_POLY1305_SHA256", "TLS_CHACHA20_POLY1305_SHA256", "tls13", "any", V13],
  [0x1304, "TLS_AES_128_CCM_SHA256", "TLS_AES_128_CCM_SHA256", "tls13", "any", V13],
  [0x1305, "TLS_AES_128_CCM_8_SHA256", "TLS_AES_128_CCM_8_SHA256", "tls13", "any", V13],
  [0xc02b, "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", "ECDHE-ECDSA-AES128-GCM-SHA256", "ecdhe", "ecdsa", V12],
  [0xc02c, "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384", "ECDHE-ECDSA-AES256-GCM-SHA384", "ecdhe", "ecdsa", V12],
  [0xcca9, "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256", "ECDHE-ECDSA-CHACHA20-POLY1305", "ecdhe", "ecdsa", V12],
  [0xc0ac, "TLS_ECDHE_ECDSA_WITH_AES_128_CCM", "ECDHE-ECDSA-AES128-CCM", "ecdhe", "ecdsa", V12],
  [0xc0ad, "TLS_ECDHE_ECDSA_WITH_AES_256_CCM", "ECDHE-ECDSA-AES256-CCM", "ecdhe", "ecdsa", V12],
  [0xc0ae, "TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8", "ECDHE-ECDSA-AES128-CCM8", "ecdhe", "ecdsa", V12],
  [0xc0af, "TLS_ECDHE_ECDSA_WITH_AES_256_CCM_8", "ECDHE-ECDSA-AES256-CCM8", "ecdhe", "ecdsa", V12],
  [0xc023, "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256", "ECDHE-ECDSA-AES128-SHA256", "ecdhe", "ecdsa", V12],
  [0xc024, "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA384", "ECDHE-ECDSA-AES256-SHA384", "ecdhe", "ecdsa", V12],
  [0xc009, "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA", "ECDHE-ECDSA-AES128-SHA", "ecdhe", "ecdsa", V10],
  [0xc00a, "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA", "ECDHE-ECDSA-AES256-SHA", "ecdhe", "ecdsa", V10],
  [0xc008, "TLS_ECDHE_ECDSA_WITH_3DES_EDE_CBC_SHA", "ECDHE-ECDSA-DES-CBC3-SHA", "ecdhe", "ecdsa", V10],
  [0xc007, "TLS_ECDHE_ECDSA_WITH_RC4_128_SHA", "ECDHE-ECDSA-RC4-SHA", "ecdhe", "ecdsa", V10],
  [0xc072, "TLS_ECDHE_ECDSA_WITH_CAMELLIA_128_CBC_SHA256", "ECDHE-ECDSA-CAMELLIA128-SHA256", "ecdhe", "ecdsa", V12],
  [0xc073, "TLS_ECDHE_ECDSA_WITH_CAMELLIA_256_CBC_SHA384", "ECDHE-ECDSA-CAMELLIA256-SHA384", "ecdhe", "ecdsa", V12],
  [0xc05c, "TLS_ECDHE_ECDSA_WITH_ARIA_128_GCM_SHA256", "ECDHE-ECDSA-ARIA128-GCM-SHA256", "ecdhe", "ecdsa", V12],
  [0xc05d, "TLS_ECDHE_ECDSA_WITH_ARIA_256_GCM_SHA384", "ECDHE-ECDSA-ARIA256-GCM-SHA384", "ecdhe", "ecdsa", V12],
  [0xc02f, "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", "ECDHE-RSA-AES128-GCM-SHA256", "ecdhe", "rsa", V12],
  [0xc030, "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384", "ECDHE-RSA-AES256-GCM-SHA384", "ecdhe", "rsa", V12],
  [0xcca8, "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256", "ECDHE-RSA-CHACHA20-POLY1305", "ecdhe", "rsa", V12],
  [0xc027, "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256", "ECDHE-RSA-AES128-SHA256", "ecdhe", "rsa", V12],
  [0xc028, "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA384", "ECDHE-RSA-AES256-SHA384", "ecdhe", "rsa", V12],
  [0xc013, "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA", "ECDHE-RSA-AES128-SHA", "ecdhe", "rsa", V10],
  [0xc014, "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA", "ECDHE-RSA-AES256-SHA", "ecdhe", "rsa", V10],
  [0xc012, "TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA", "ECDHE-RSA-DES-CBC3-SHA", "ecdhe", "rsa", V10],
  [0xc011, "TLS_ECDHE_RSA_WITH_RC4_128_SHA", "ECDHE-RSA-RC4-SHA", "ecdhe", "rsa", V10],
  [0xc076, "TLS_ECDHE_RSA_WITH_CAMELLIA_128_CBC_SHA256", "ECDHE-RSA-CAMELLIA128-SHA256", "ecdhe", "rsa", V12],
  [0xc077, "TLS_ECDHE_RSA_WITH_CAMELLIA_256_CBC_SHA384", "ECDHE-RSA-CAMELLIA256-SHA384", "ecdhe", "rsa", V12],
  [0xc060, "TLS_ECDHE_RSA_WITH_ARIA_128_GCM_SHA256", "ECDHE-ARIA128-GCM-SHA256", "ecdhe", "rsa", V12],
  [0xc061, "TLS_ECDHE_RSA_WITH_ARIA_256_GCM_SHA384", "ECDHE-ARIA256-GCM-SHA384", "ecdhe", "rsa", V12],
  [0x009e, "TLS_DHE_RSA_WITH_AES_128_GCM_SHA256", "DHE-RSA-AES128-GCM-SHA256", "dhe", "rsa", V12],
  [0x009f, "TLS_DHE_RSA_WITH_AES_256_GCM_SHA384", "DHE-RSA-AES256-GCM-SHA384", "dhe", "rsa", V12],
  [0xccaa, "TLS_DHE_RSA_WITH_CHACHA20_POLY1305_SHA256", "DHE-RSA-CHACHA20-POLY1305", "dhe", "rsa", V12],
  [0xc09e, "TLS_DHE_RSA_WITH_AES_128_CCM", "DHE-RSA-AES128-CCM", "dhe", "rsa", V12],
  [0xc09f, "TLS_DHE_RSA_WITH_AES_256_CCM", "DHE-RSA-AES256-CCM", "dhe", "rsa", V12],
  [0xc0a2, "TLS_DHE_RSA_WITH_AES_128_CCM_8", "DHE-RSA-AES128-CCM8", "dhe", "rsa", V12],
  [0xc0a3, "TLS_DHE_RSA_WITH_AES_256_CCM_8", "DHE-RSA-AES256-CCM8", "dhe", "rsa", V12],
  [0x0067, "TLS_DHE_RSA_WITH_AES_128_CBC_SHA256", "DHE-RSA-AES128-SHA256", "dhe", "rsa", V12],
  [0x006b, "TLS_DHE_RSA_WITH_AES_256_CBC_SHA256", "DHE-RSA-AES256-SHA256", "dhe", "rsa", V12],
  [0x0033, "TLS_DHE_RSA_WITH_AES_128_CBC_SHA", "DHE-RSA-AES128-SHA", "dhe", "rsa", V10],
  [0x0039, "TLS_DHE_RSA_WITH_AES_256_CBC_SHA", "DHE-RSA-AES256-SHA", "dhe", "rsa", V10],
  [0x0016, "TLS_DHE_RSA_WITH_3DES_EDE_CBC_SHA", "DHE-RSA-DES-CBC3-SHA", "dhe", "rsa", V10],
  [0x0045, "TLS_DHE_RSA_WITH_CAMELLIA_128_CBC_SHA", "DHE-RSA-CAMELLIA128-SHA", "dhe", "rsa", V10],
  [0x0088, "TLS_DHE_RSA_WITH_CAMELLIA_256_CBC_SHA", "DHE-RSA-CAMELLIA256-SHA", "dhe", "rsa", V10],
  [0x00be, "TLS_DHE_RSA_WITH_CAMELLIA_128_CBC_SHA256", "DHE-RSA-CAMELLIA128-SHA256", "dhe", "rsa", V12],
  [0x00c4, "TLS_DHE_RSA_WITH_CAMELLIA_256_CBC_SHA256", "DHE-RSA-CAMELLIA256-SHA256", "dhe", "rsa", V12],
  [0xc052, "TLS_DHE_RSA_WITH_ARIA_128_GCM_SHA256", "DHE-RSA-ARIA128-GCM-SHA256", "dhe", "rsa", V12],
  [0xc053, "TLS_DHE_RSA_WITH_ARIA_256_GCM_SHA384", "DHE-RSA-ARIA256-GCM-SHA384", "dhe", "rsa", V12],
  [0x00a2, "TLS_DHE_DSS_WITH_AES_128_GCM_SHA256", "DHE-DSS-AES128-GCM-SHA256", "dhe", "dss", V12],
  [0x00a3, "TLS_DHE_DSS_WITH_AES_256_GCM_SHA384", "DHE-DSS-AES256-GCM-SHA384", "dhe", "dss", V12],
  [0x0040, "TLS_DHE_DSS_WITH_AES_128_CBC_SHA256", "DHE-DSS-AES128-SHA256", "dhe", "dss", V12],
  [0x006a, "TLS_DHE_DSS_WITH_AES_256_CBC_SHA256", "DHE-DSS-AES256-SHA256", "dhe", "dss", V12],
  [0x0032, "TLS_DHE_DSS_WITH_AES_128_CBC_SHA", "DHE-DSS-AES128-SHA", "dhe", "dss", V10],
  [0x0038, "TLS_DHE_DSS_WITH_AES_256_CBC_SHA", "DHE-DSS-AES256-SHA", "dhe", "dss", V10],
  [0x0013, "TLS_DHE_DSS_WITH_3DES_EDE_CBC_SHA", "DHE-DSS-DES-CBC3-SHA", "dhe", "dss", V10],
  [0x009c, "TLS_RSA_WITH_AES_128_GCM_SHA256", "AES128-GCM-SHA256", "rsa", "rsa", V12],
  [0x009d, "TLS_RSA_WITH_AES_256_GCM_SHA384", "AES256-GCM-SHA384", "rsa", "rsa", V12],
  [0xc09c, "TLS_RSA_WITH_AES_128_CCM", "AES128-CCM", "rsa", "rsa", V12],
  [0xc09d, "TLS_RSA_WITH_AES_256_CCM", "AES256-CCM", "rsa", "rsa", V12],
  [0xc0a0, "TLS_RSA_WITH_AES_128_CCM_8", "AES128-CCM8", "rsa", "rsa", V12],
  [0xc0a1, "TLS_RSA_WITH_AES_256_CCM_8", "AES256-CCM8", "rsa", "rsa", V12],
  [0x003c, "TLS_RSA_WITH_AES_128_CBC_SHA256", "AES128-SHA256", "rsa", "rsa", V12],
  [0x003d, "TLS_RSA_WITH_AES_256_CBC_SHA256", "AES256-SHA256", "rsa", "rsa", V12],
  [0x002f, "TLS_RSA_WITH_AES_128_CBC_SHA", "AES128-SHA", "rsa", "rsa", V10],
  [0x0035, "TLS_RSA_WITH_AES_256_CBC_SHA", "AES256-SHA", "rsa", "rsa", V10],
  [0x000a, "TLS_RSA_WITH_3DES_EDE_CBC_SHA", "DES-CBC3-SHA", "rsa", "rsa", V10],
  [0x0041, "TLS_RSA_WITH_CAMELLIA_128_CBC_SHA", "CAMELLIA128-SHA", "rsa", "rsa", V10],
  [0x0084, "TLS_RSA_WITH_CAMELLIA_256_CBC_SHA", "CAMELLIA256-SHA", "rsa", "rsa", V10],
  [0x00ba, "TLS_RSA_WITH_CAMELLIA_128_CBC_SHA256", "CAMELLIA128-SHA256", "rsa", "rsa", V12],
  [0x00c0, "TLS_RSA_WITH_CAMELLIA_256_CBC_SHA256", "CAMELLIA256-SHA256", "rsa", "rsa", V12],
  [0xc050, "TLS_RSA_WITH_ARIA_128_GCM_SHA256", "ARIA128-GCM-SHA256", "rsa", "rsa", V12],
  [0xc051, "TLS_RSA_WITH_ARIA_256_GCM_SHA384", "ARIA256-GCM-SHA384", "rsa", "rsa", V12],
  [0x0096, "TLS_RSA_WITH_SEED_CBC_SHA", "SEED-SHA", "rsa", "rsa", V10],
  [0x0007, "TLS_RSA_WITH_IDEA_CBC_SHA", "IDEA-CBC-SHA", "rsa", "rsa", V10],
  [0x0005, "TLS_RSA_WITH_RC4_128_SHA", "RC4-SHA", "rsa", "rsa", V10],
  [0x0004, "TLS_RSA_WITH_RC4_128_MD5", "RC4-MD5", "rsa", "rsa", V10],
  // RFC 5746 §3.3 and RFC 7507: signals, not suites; counted so an operator sees them, never chosen.
  [0x00ff, "TLS_EMPTY_RENEGOTIATION_INFO_SCSV", "TLS_EMPTY_RENEGOTIATION_INFO_SCSV", "scsv", "any", 0],
  [0x5600, "TLS_FALLBACK_SCSV", "TLS_FALLBACK_SCSV", "scsv", "any", 0],
]

/** CIPHERS: every suite the census names, at its bit index. */
export const CIPHERS: readonly CipherInfo[] = CIPHER_ROWS.map(([code, iana, openssl, kx, auth, minVersion]) => ({
  code,
  iana,
  openssl,
  kx,
  auth,
  minVersion,
}))

/** GroupInfo: a named group (RFC 8446 §4.2.7), its IANA name and the names OpenSSL also accepts in ecdhCurve. */
export interface GroupInfo {
  code: number
  name: string
  aliases: readonly string[]
  /** usable for TLS 1.2 ECDHE (an elliptic curve): not ffdhe, not a TLS 1.3-only hybrid or ML-KEM */
  ecdhe: boolean
}

const GROUP_ROWS: readonly [number, string, readonly string[], boolean][] = [
  [0x11ec, "X25519MLKEM768", [], false],
  [0x11eb, "SecP256r1MLKEM768", [], false],
  [0x11ed, "SecP384r1MLKEM1024", [], false],
  [0x6399, "X25519Kyber768Draft00", [], false],
  [0x0200, "MLKEM512", [], false],
  [0x0201, "MLKEM768", [], false],
  [0x0202, "MLKEM1024", [], false],
  [0x001d, "X25519", [], true],
  [0x001e, "X448", [], true],
  [0x0017, "secp256r1", ["P-256", "prime256v1"], true],
  [0x0018, "secp384r1", ["P-384"], true],
  [0x0019, "secp521r1", ["P-521"], true],
  [0x0016, "secp256k1", [], true],
  [0x0015, "secp224r1", ["P-224"], true],
  [0x001a, "brainpoolP256r1", [], true],
  [0x001b, "brainpoolP384r1", [], true],
  [0x001c, "brainpoolP512r1", [], true],
  [0x001f, "brainpoolP256r1tls13", [], false],
  [0x0020, "brainpoolP384r1tls13", [], false],
  [0x0021, "brainpoolP512r1tls13", [], false],
  [0x0100, "ffdhe2048", [], false],
  [0x0101, "ffdhe3072", [], false],
  [0x0102, "ffdhe4096", [], false],
  [0x0103, "ffdhe6144", [], false],
  [0x0104, "ffdhe8192", [], false],
]

/** GROUPS: every group the census names, at its bit index. */
export const GROUPS: readonly GroupInfo[] = GROUP_ROWS.map(([code, name, aliases, ecdhe]) => ({
  code,
  name,
  aliases,
  ecdhe,
}))

/** SigalgInfo: a SignatureScheme (RFC 8446 §4.2.3) and the key it signs with. */
export interface SigalgInfo {
  code: number
  name: string
  /** the certificate key it needs; ecdsa schemes of TLS 1.3 also name the curve */
  key: "ecdsa" | "rsa" | "rsa_pss" | "ed25519" | "ed448" | "dsa" | "mldsa"
  /** TLS 1.3 binds an ECDSA scheme to one curve (OpenSSL's name of the curve) */
  curve?: string
  sha1: boolean
  /** usable in TLS 1.3 handshake signatures (RFC 8446 §4.2.3: not PKCS#1 v1.5, not SHA-1) */
  tls13: boolean
}

const SIGALG_ROWS: readonly [number, string, SigalgInfo["key"], string | undefined, boolean, boolean][] = [
  [0x0403, "ecdsa_secp256r1_sha256", "ecdsa", "prime256v1", false, true],
  [0x0503, "ecdsa_secp384r1_sha384", "ecdsa", "secp384r1", false, true],
  [0x0603, "ecdsa_secp521r1_sha512", "ecdsa", "secp521r1", false, true],
  [0x0203, "ecdsa_sha1", "ecdsa", undefined, true, false],
  [0x0303, "ecdsa_sha224", "ecdsa", undefined, false, false],
  [0x0804, "rsa_pss_rsae_sha256", "rsa", undefined, false, true],
  [0x0805, "rsa_pss_rsae_sha384", "rsa", undefined, false, true],
  [0x0806, "rsa_pss_rsae_sha512", "rsa", undefined, false, true],
  [0x0809, "rsa_pss_pss_sha256", "rsa_pss", undefined, false, true],
  [0x080a, "rsa_pss_pss_sha384", "rsa_pss", undefined, false, true],
  [0x080b, "rsa_pss_pss_sha512", "rsa_pss", undefined, false, true],
  [0x0401, "rsa_pkcs1_sha256", "rsa", undefined, false, false],
  [0x0501, "rsa_pkcs1_sha384", "rsa", undefined, false, false],
  [0x0601, "rsa_pkcs1_sha512", "rsa", undefined, false, false],
  [0x0301, "rsa_pkcs1_sha224", "rsa", undefined, false, false],
  [0x0201, "rsa_pkcs1_sha1", "rsa", undefined, true, false],
  [0x0807, "ed25519", "ed25519", undefined, false, true],
  [0x0808, "ed448", "ed448", undefined, false, true],
  [0x081a, "ecdsa_brainpoolP256r1tls13_sha256", "ecdsa", "brainpoolP256r1", false, true],
  [0x081b, "ecdsa_brainpoolP384r1tls13_sha384", "ecdsa", "brainpoolP384r1", false, true],
  [0x081c, "ecdsa_brainpoolP512r1tls13_sha512", "ecdsa", "brainpoolP512r1", false, true],
  [0x0402, "dsa_sha256", "dsa", undefined, false, false],
  [0x0202, "dsa_sha1", "dsa", undefined, true, false],
  [0x0904, "mldsa44", "mldsa", undefined, false, true],
  [0x0905, "mldsa65", "mldsa", undefined, false, true],
  [0x0906, "mldsa87", "mldsa", undefined, false, true],
]

/** SIGALGS: every signature scheme the census names, at its bit index. */
export const SIGALGS: readonly SigalgInfo[] = SIGALG_ROWS.map(([code, name, key, curve, sha1, tls13]) => ({
  code,
  name,
  key,
  ...(curve === undefined ? {} : { curve }),
  sha1,
  tls13,
}))

if (CIPHERS.length > MAX_CIPHERS || GROUPS.length > MAX_SMALL || SIGALGS.length > MAX_SMALL) {
  throw new RangeError("tls-codes: a table outgrew its bit mask")
}

/** OTHER_BIT: the last bit of each mask, set when the client offered a code the table does not know. */
export const OTHER_BIT = 31

/**
 * Lookup tables from a 16-bit code to its index + 1 (0: unknown): one typed array each, so the parser on the
 * accept path maps a code with one load and no Map.
 */
function indexOf(codes: readonly { code: number }[]): Uint8Array {
  const table = new Uint8Array(65536)
  for (let i = 0; i < codes.length; i++) table[codes[i]!.code] = i + 1
  return table
}
export const CIPHER_INDEX = indexOf(CIPHERS)
export const GROUP_INDEX = indexOf(GROUPS)
export const SIGALG_INDEX = indexOf(SIGALGS)

/** isGrease: RFC 8701 §2 reserves 0x0A0A, 0x1A1A, … 0xFAFA (both bytes equal, low nibble A) for GREASE. */
export function isGrease(code: number): boolean {
  return (code & 0x0f0f) === 0x0a0a && code >> 8 === (code & 0xff)
}

const BY_OPENSSL = new Map(CIPHERS.map((c, i) => [c.openssl.toUpperCase(), i]))
const BY_GROUP_NAME = new Map(GROUPS.flatMap((g, i) => [g.name, ...g.aliases].map((n) => [n.toLowerCase(), i])))

/** cipherByOpenSslName: the CIPHERS index of an OpenSSL (or TLS 1.3 IANA) suite name, or -1. */
export function cipherByOpenSslName(name: string): number {
  return BY_OPENSSL.get(name.toUpperCase()) ?? -1
}

/** groupByName: the GROUPS index of an IANA or OpenSSL group name ("P-256", "X25519MLKEM768"), or -1. */
export function groupByName(name: string): number {
  return BY_GROUP_NAME.get(name.toLowerCase()) ?? -1
}
