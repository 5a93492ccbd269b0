/**
 * @module cert-pick: predicts which certificate of an ECDSA+RSA SecureContext OpenSSL serves to a ClientHello, so a
 * listener can set that certificate's OCSP staple before the handshake: Node takes the staple before OpenSSL picks
 * the certificate. The rules are what OpenSSL 3.5 does (measured in test/tls/cert-pick.test.ts); where a ClientHello
 * or a policy goes beyond them the answer is PICK_UNSURE, and the caller staples nothing.
 */
import { constants } from "node:crypto"
import tls from "node:tls"
import type { LoadedCertificate } from "./certificate.ts"
import { walkHello } from "./client-hello.ts"
import { CIPHER_INDEX, CIPHERS, cipherByOpenSslName, GROUPS, groupByName, isGrease } from "./tls-codes.ts"

/** pick() answers: the index into CertPick.certs, or PICK_UNSURE. */
export const PICK_ECDSA = 0
export const PICK_RSA = 1
export const PICK_UNSURE = -1

/** PickPolicy: the TLS options of the context (policy.ts serverTlsOptions) that decide the pick. */
export interface PickPolicy {
  minVersion?: string | undefined
  maxVersion?: string | undefined
  ciphers?: string | undefined
  ecdhCurve?: string | undefined
  honorCipherOrder?: boolean | undefined
  secureOptions?: number | undefined
}

const VERSION_CODE: Record<string, number> = { TLSv1: 0x0301, "TLSv1.1": 0x0302, "TLSv1.2": 0x0303, "TLSv1.3": 0x0304 }

/** The TLS 1.3 scheme (RFC 8446 §4.2.3 binds ECDSA schemes to a curve) and the group of each ECDSA curve served. */
const CURVES: Record<string, { sigalg: number; group: number }> = {
  prime256v1: { sigalg: 0x0403, group: 0x0017 },
  secp384r1: { sigalg: 0x0503, group: 0x0018 },
  secp521r1: { sigalg: 0x0603, group: 0x0019 },
}

/** Three-valued answers of the checks: NO < MAYBE < YES, and "both must hold" is the smaller one. */
const NO = 0
const MAYBE = 1
const YES = 2

/** CHACHA[i]: CIPHERS[i] is a ChaCha20-Poly1305 suite (what SSL_OP_PRIORITIZE_CHACHA moves up). */
const CHACHA = Uint8Array.from(CIPHERS, (c) => (c.iana.includes("CHACHA20") ? 1 : 0))
/** Rank of a suite the server does not have (ranks are positions in a preference order). */
const NOT_OFFERED = 0x7fff

/**
 * CertPick predicts OpenSSL's certificate choice for one ECDSA+RSA context. OpenSSL 3.5 chooses so:
 * - TLS 1.3 (tls_choose_sigalg): the first shared signature scheme a certificate can make, in the server's order
 *   (its defaults list every ECDSA scheme before RSA-PSS) when the cipher order is the server's, else in the
 *   client's; the ECDSA certificate only through the scheme of its curve, the RSA one through rsa_pss_rsae_*.
 * - TLS 1.2 and below: the certificate the chosen cipher suite authenticates with; the suite is the first, in the
 *   server's order (ChaCha20 suites first when the client lists one first, SSL_OP_PRIORITIZE_CHACHA) or the
 *   client's, that both offer, the version allows, has a shared ECDHE group if it needs one, and whose certificate
 *   the client can take: a signature scheme for its key (TLS 1.2) and, for ECDSA, its curve among the client's
 *   supported_groups (RFC 8422 §5.1).
 * pick() runs in the handshake on the ClientHello the listener peeked: it reads the bytes in place, through the
 * layout the peek's walk left (client-hello.ts walkHello), and allocates nothing.
 */
export class CertPick {
  /** [ECDSA, RSA]: pick() answers an index into it */
  readonly certs: readonly [LoadedCertificate, LoadedCertificate]
  readonly #min: number
  readonly #max: number
  readonly #serverOrder: boolean
  readonly #chachaFirst: boolean
  /**
   * each suite's place in the server's TLS 1.2-and-below order, by CIPHERS index (NOT_OFFERED: not in it);
   * undefined: its cipher string has keywords these tables cannot expand
   */
  readonly #rank: Int16Array | undefined
  /** the server's groups usable for TLS 1.2 ECDHE, by code; undefined: a group the tables do not know */
  readonly #ecdheGroups: Uint8Array | undefined
  readonly #ecSigalg: number
  readonly #ecGroup: number

  constructor(ecdsa: LoadedCertificate, rsa: LoadedCertificate, curve: string, policy: PickPolicy) {
    this.certs = [ecdsa, rsa]
    this.#min = VERSION_CODE[policy.minVersion ?? "TLSv1.2"] ?? 0x0303
    this.#max = VERSION_CODE[policy.maxVersion ?? "TLSv1.3"] ?? 0x0304
    this.#serverOrder = policy.honorCipherOrder === true
    this.#chachaFirst = this.#serverOrder && ((policy.secureOptions ?? 0) & constants.SSL_OP_PRIORITIZE_CHACHA) !== 0
    this.#ecSigalg = CURVES[curve]!.sigalg
    this.#ecGroup = CURVES[curve]!.group
    // OpenSSL drops names it does not have from a cipher list; tls.getCiphers() is what this one has.
    const available = new Set(tls.getCiphers().map((c) => c.toUpperCase()))
    const order: number[] = []
    let known = true
    for (const raw of (policy.ciphers ?? "").split(":")) {
      const name = raw.trim()
      if (name === "" || /^@SECLEVEL=\d$/i.test(name)) continue
      const i = cipherByOpenSslName(name)
      if (i < 0 || /^[!+-]/.test(name)) known = false
      else if (CIPHERS[i]!.kx !== "tls13" && available.has(name.toUpperCase()) && !order.includes(i)) order.push(i)
    }
    if (known) {
      this.#rank = new Int16Array(CIPHERS.length).fill(NOT_OFFERED)
      for (const [k, i] of order.entries()) this.#rank[i] = k
    }
    const groups = new Uint8Array(65536)
    let groupsKnown = true
    for (const raw of (policy.ecdhCurve ?? "").split(":")) {
      const name = raw.trim()
      if (name === "") continue
      const i = groupByName(name)
      if (i < 0) groupsKnown = false
      else if (GROUPS[i]!.ecdhe) groups[GROUPS[i]!.code] = 1
    }
    this.#ecdheGroups = groupsKnown && policy.ecdhCurve ? groups : undefined
  }

  /** pick reads a ClientHello body (handshake header stripped) and says which certificate OpenSSL will serve. */
  pick(hello: Buffer): number {
    // The listener's peek walked this body already (client-hello.ts): the same layout, no second walk.
    const l = walkHello(hello)
    // An extension past the list's end, or signature_algorithms_cert (OpenSSL then also judges the chain's
    // signatures): beyond these rules.
    if (!l.valid || !l.compression || l.truncated || l.sigalgsCert) return PICK_UNSURE
    const version = this.#version(hello, l.versions)
    if (version < 0) return PICK_UNSURE
    if (version === 0x0304) return this.#pick13(hello, l.sigalgs)
    return this.#pick12(hello, version, l.suitesFrom, l.suitesTo, l.groups, l.points, l.sigalgs)
  }

  /** version: the one OpenSSL negotiates (RFC 8446 §4.2.1: supported_versions, else legacy_version up to TLS 1.2). */
  #version(hello: Buffer, at: number): number {
    if (at < 0) {
      const legacy = Math.min((hello[0]! << 8) | hello[1]!, 0x0303, this.#max)
      return legacy >= this.#min ? legacy : -1
    }
    let best = -1
    const to = Math.min(hello.length, at + 1 + hello[at]!)
    for (let q = at + 1; q + 2 <= to; q += 2) {
      const v = (hello[q]! << 8) | hello[q + 1]!
      if (v >= this.#min && v <= this.#max && v > best) best = v
    }
    return best
  }

  #pick13(hello: Buffer, at: number): number {
    if (at < 0) return PICK_UNSURE
    const to = Math.min(hello.length, at + 2 + ((hello[at]! << 8) | hello[at + 1]!))
    let rsa = false
    for (let q = at + 2; q + 2 <= to; q += 2) {
      const code = (hello[q]! << 8) | hello[q + 1]!
      if (code === this.#ecSigalg) return PICK_ECDSA
      // rsa_pss_rsae_sha256/384/512: the schemes of an rsaEncryption key in TLS 1.3 (no PKCS#1 v1.5 there).
      if (code >= 0x0804 && code <= 0x0806) {
        if (!this.#serverOrder) return PICK_RSA
        rsa = true
      }
    }
    return rsa ? PICK_RSA : PICK_UNSURE
  }

  #pick12(
    hello: Buffer,
    version: number,
    suitesFrom: number,
    suitesTo: number,
    groups: number,
    points: number,
    sigalgs: number,
  ): number {
    const rank = this.#rank
    if (rank === undefined) return PICK_UNSURE
    // What the client can take, each YES, NO or MAYBE (a case these rules leave open).
    let ecdhe = YES
    let ecCurve = YES
    if (groups < 0) {
      // No supported_groups: whether OpenSSL then finds a curve is beyond these rules.
      ecdhe = MAYBE
      ecCurve = MAYBE
    } else {
      const to = Math.min(hello.length, groups + 2 + ((hello[groups]! << 8) | hello[groups + 1]!))
      const server = this.#ecdheGroups
      ecdhe = server === undefined ? MAYBE : NO
      ecCurve = NO
      for (let q = groups + 2; q + 2 <= to; q += 2) {
        const code = (hello[q]! << 8) | hello[q + 1]!
        if (code === this.#ecGroup) ecCurve = YES
        if (server !== undefined && server[code] === 1) ecdhe = YES
      }
    }
    if (points >= 0) {
      // RFC 8422 §5.1.2: a client that lists point formats must list uncompressed (0) for ECDHE and ECDSA to work.
      let uncompressed = false
      for (let q = points + 1; q < Math.min(hello.length, points + 1 + hello[points]!); q++)
        if (hello[q] === 0) uncompressed = true
      if (!uncompressed) ecdhe = ecCurve = MAYBE
    }
    let ecSign = YES
    let rsaSign = YES
    if (version >= 0x0303) {
      if (sigalgs < 0) {
        // RFC 5246 §7.4.1.4.1: no extension means SHA-1, which OpenSSL 3's security levels may refuse.
        ecSign = rsaSign = MAYBE
      } else {
        ecSign = rsaSign = NO
        const to = Math.min(hello.length, sigalgs + 2 + ((hello[sigalgs]! << 8) | hello[sigalgs + 1]!))
        for (let q = sigalgs + 2; q + 2 <= to; q += 2) {
          const code = (hello[q]! << 8) | hello[q + 1]!
          // TLS 1.2 ECDSA schemes name a hash only; SHA-1 and SHA-224 depend on the security level.
          if (code === 0x0403 || code === 0x0503 || code === 0x0603) ecSign = YES
          else if ((code === 0x0203 || code === 0x0303) && ecSign === NO) ecSign = MAYBE
          else if ((code >= 0x0804 && code <= 0x0806) || code === 0x0401 || code === 0x0501 || code === 0x0601)
            rsaSign = YES
          else if ((code === 0x0201 || code === 0x0301) && rsaSign === NO) rsaSign = MAYBE
        }
      }
    }
    // SSL_OP_PRIORITIZE_CHACHA: when the client's first suite is a ChaCha20 one, the server's ChaCha20 suites go
    // first. OpenSSL's "first" skips what it does not know (GREASE); a code these tables do not know is unsure.
    let chacha = false
    if (this.#chachaFirst) {
      for (let q = suitesFrom; q + 2 <= suitesTo; q += 2) {
        const code = (hello[q]! << 8) | hello[q + 1]!
        const i = CIPHER_INDEX[code]! - 1
        if (i < 0 && isGrease(code)) continue
        if (i < 0) return PICK_UNSURE
        if (CIPHERS[i]!.kx === "scsv") continue
        chacha = CHACHA[i] === 1
        break
      }
    }
    // The suite chosen is the best-ranked one both offer that the server can use: ranked by the server's order, or
    // by the client's. If the best one is MAYBE, so is the answer.
    let best = NOT_OFFERED
    let verdict = NO
    let auth = PICK_UNSURE
    for (let q = suitesFrom; q + 2 <= suitesTo; q += 2) {
      const i = CIPHER_INDEX[(hello[q]! << 8) | hello[q + 1]!]! - 1
      if (i < 0) continue
      let place = rank[i]!
      if (place === NOT_OFFERED) continue
      if (!this.#serverOrder) place = q - suitesFrom
      else if (chacha && CHACHA[i] === 1) place -= NOT_OFFERED
      if (place >= best) continue
      const v = judgeSuite(i, version, ecdhe, ecCurve, ecSign, rsaSign)
      if (v === NO) continue
      best = place
      verdict = v
      auth = CIPHERS[i]!.auth === "ecdsa" ? PICK_ECDSA : PICK_RSA
    }
    return verdict === YES ? auth : PICK_UNSURE
  }
}

/** judgeSuite: whether the server can choose suite i (CIPHERS index) for this client: YES, NO or MAYBE. */
function judgeSuite(
  i: number,
  version: number,
  ecdhe: number,
  ecCurve: number,
  ecSign: number,
  rsaSign: number,
): number {
  const suite = CIPHERS[i]!
  if (suite.kx === "tls13" || suite.kx === "scsv" || suite.minVersion > version - 0x0300) return NO
  if (suite.auth === "dss") return NO
  // DHE suites need DH parameters Portcullis does not set, unless a cipher string names them: beyond these rules.
  if (suite.kx === "dhe") return MAYBE
  if (suite.auth === "ecdsa") return Math.min(ecdhe, ecCurve, ecSign)
  // Static RSA key exchange signs nothing, but OpenSSL still wants the RSA key usable (aRSA) at TLS 1.2.
  return suite.kx === "rsa" ? rsaSign : Math.min(ecdhe, rsaSign)
}

/**
 * certPickFor makes the CertPick of a context's certificates when they are one ECDSA (P-256, P-384 or P-521) and
 * one RSA (rsaEncryption, 2048 bits or more) certificate; undefined for anything else (one certificate needs no
 * pick; other mixes are not predicted, so they get no staple).
 */
export function certPickFor(list: readonly LoadedCertificate[], policy: PickPolicy): CertPick | undefined {
  if (list.length !== 2) return undefined
  const ecdsa = list.find((c) => c.keyType === "ecdsa")
  const rsa = list.find((c) => c.keyType === "rsa")
  if (!ecdsa || !rsa) return undefined
  const curve = ecdsa.leaf.publicKey.asymmetricKeyDetails?.namedCurve ?? ""
  const rsaKey = rsa.leaf.publicKey
  if (CURVES[curve] === undefined || rsaKey.asymmetricKeyType !== "rsa") return undefined
  if ((rsaKey.asymmetricKeyDetails?.modulusLength ?? 0) < 2048) return undefined
  return new CertPick(ecdsa, rsa, curve, policy)
}
