/** @module tls-alpn-01: answers tls-alpn-01 challenges (RFC 8737) on the TLS listeners. */
import tls from "node:tls"
import acme from "acme-client"
import { normalizeName } from "../../certificate.ts"
import type { ChallengeChange, ChallengeRelay } from "../feed.ts"
import type { ChallengeSolver, ChallengeTarget } from "./solver.ts"

/** The ALPN protocol of a validation handshake (RFC 8737 §6.2). */
export const ACME_TLS_ALPN = "acme-tls/1"

/**
 * TlsAlpnResponder keeps, per name with a pending challenge, a SecureContext holding the self-signed challenge
 * certificate with the critical acmeIdentifier extension (RFC 8737 §3). The listener serves it to a ClientHello
 * that offers only `acme-tls/1` for that name, negotiates that protocol and closes after the handshake. With a
 * relay (a cluster primary), present returns only once the relay has every worker serving it too.
 */
export class TlsAlpnResponder implements ChallengeSolver {
  readonly type = "tls-alpn-01" as const
  readonly #contexts = new Map<string, tls.SecureContext>()
  /** The PEMs of each pending challenge certificate (for a worker that starts while it is pending). */
  readonly #pems = new Map<string, { cert: string; key: string }>()
  relay: ChallengeRelay | undefined

  async present(target: ChallengeTarget): Promise<void> {
    const keyPem = await acme.crypto.createPrivateEcdsaKey("P-256")
    const [, certPem] = await acme.crypto.createAlpnCertificate(
      { identifier: { type: "dns", value: target.name } } as acme.Authorization,
      target.keyAuthorization,
      keyPem,
    )
    const change = {
      type: "tls-alpn-01",
      name: target.name,
      cert: certPem.toString("utf8"),
      key: keyPem.toString("utf8"),
    } as const
    this.apply(change)
    await this.relay?.(change)
  }

  async cleanup(target: ChallengeTarget): Promise<void> {
    this.apply({ type: "tls-alpn-01", name: target.name })
    await this.relay?.({ type: "tls-alpn-01", name: target.name })
  }

  /** apply installs (or, without cert and key, withdraws) a name's challenge certificate. */
  apply(change: Extract<ChallengeChange, { type: "tls-alpn-01" }>): void {
    const name = normalizeName(change.name)
    if (change.cert === undefined || change.key === undefined) {
      this.#contexts.delete(name)
      this.#pems.delete(name)
      return
    }
    this.#contexts.set(name, tls.createSecureContext({ key: change.key, cert: change.cert }))
    this.#pems.set(name, { cert: change.cert, key: change.key })
  }

  /** pending lists the challenge certificates served now, as changes. */
  pending(): ChallengeChange[] {
    return [...this.#pems].map(([name, pem]) => ({ type: "tls-alpn-01", name, ...pem }))
  }

  /** contextFor is the challenge context of a name (a map read, in the handshake), if one is pending. */
  contextFor(name: string): tls.SecureContext | undefined {
    return this.#contexts.size === 0 ? undefined : this.#contexts.get(normalizeName(name))
  }
}
