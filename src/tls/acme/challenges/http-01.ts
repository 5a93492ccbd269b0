/** @module http-01: answers http-01 challenges (RFC 8555 §8.3) on the redirect_https listener. */
import type { ChallengeChange, ChallengeRelay } from "../feed.ts"
import type { ChallengeSolver, ChallengeTarget } from "./solver.ts"

/** The path prefix the CA fetches: http://<name>/.well-known/acme-challenge/<token> (RFC 8555 §8.3). */
export const HTTP01_PREFIX = "/.well-known/acme-challenge/"

/**
 * Http01Responder keeps the key authorization of each pending token; the redirect listener asks `answer` for
 * every request under HTTP01_PREFIX (a map read) before it redirects. With a relay (a cluster primary), present
 * returns only once the relay has every worker answering the token too.
 */
export class Http01Responder implements ChallengeSolver {
  readonly type = "http-01" as const
  readonly #tokens = new Map<string, string>()
  relay: ChallengeRelay | undefined

  async present(target: ChallengeTarget): Promise<void> {
    this.#tokens.set(target.token, target.keyAuthorization)
    await this.relay?.({ type: "http-01", token: target.token, keyAuthorization: target.keyAuthorization })
  }

  async cleanup(target: ChallengeTarget): Promise<void> {
    this.#tokens.delete(target.token)
    await this.relay?.({ type: "http-01", token: target.token })
  }

  /** apply takes a change another process relayed (a cluster worker's copy of the primary's tokens). */
  apply(change: Extract<ChallengeChange, { type: "http-01" }>): void {
    if (change.keyAuthorization === undefined) this.#tokens.delete(change.token)
    else this.#tokens.set(change.token, change.keyAuthorization)
  }

  /** pending lists the tokens answered now, as changes (for a worker that starts while they are). */
  pending(): ChallengeChange[] {
    return [...this.#tokens].map(([token, keyAuthorization]) => ({ type: "http-01", token, keyAuthorization }))
  }

  /** answer gives the body for a request path, or undefined when it is no pending token's. */
  answer(path: string): string | undefined {
    if (!path.startsWith(HTTP01_PREFIX)) return undefined
    return this.#tokens.get(path.slice(HTTP01_PREFIX.length))
  }
}
