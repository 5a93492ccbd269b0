/** @module tls-alpn-01: answers tls-alpn-01 challenges (RFC 8737) on the TLS listeners. */
import tls from "node:tls"
import acme from "acme-client"
import { normalizeName } from "../../certificate.ts"
import type { ChallengeSolver, ChallengeTarget } from "./solver.ts"

/** The ALPN protocol of a validation handshake (RFC 8737 §6.2). */
export const ACME_TLS_ALPN = "acme-tls/1"

/**
 * TlsAlpnResponder keeps, per name with a pending challenge, a SecureContext holding the self-signed challenge
 * certificate with the critical acmeIdentifier extension (RFC 8737 §3). The listener serves it to a ClientHello
 * that offers only `acme-tls/1` for that name, negotiates that protocol and closes after the handshake.
 */
export class TlsAlpnResponder implements ChallengeSolver {
  readonly type = "tls-alpn-01" as const
  readonly #contexts = new Map<string, tls.SecureContext>()

  async present(target: ChallengeTarget): Promise<void> {
    const key = await acme.crypto.createPrivateEcdsaKey("P-256")
    const [, cert] = await acme.crypto.createAlpnCertificate(
      { identifier: { type: "dns", value: target.name } } as acme.Authorization,
      target.keyAuthorization,
      key,
    )
    this.#contexts.set(normalizeName(target.name), tls.createSecureContext({ key, cert }))
  }

  async cleanup(target: ChallengeTarget): Promise<void> {
    this.#contexts.delete(normalizeName(target.name))
  }

  /** contextFor is the challenge context of a name (a map read, in the handshake), if one is pending. */
  contextFor(name: string): tls.SecureContext | undefined {
    return this.#contexts.size === 0 ? undefined : this.#contexts.get(normalizeName(name))
  }
}
