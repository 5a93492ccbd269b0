/** @module http-01: answers http-01 challenges (RFC 8555 §8.3) on the redirect_https listener. */
import type { ChallengeSolver, ChallengeTarget } from "./solver.ts"

/** The path prefix the CA fetches: http://<name>/.well-known/acme-challenge/<token> (RFC 8555 §8.3). */
export const HTTP01_PREFIX = "/.well-known/acme-challenge/"

/**
 * Http01Responder keeps the key authorization of each pending token; the redirect listener asks `answer` for
 * every request under HTTP01_PREFIX (a map read) before it redirects.
 */
export class Http01Responder implements ChallengeSolver {
  readonly type = "http-01" as const
  readonly #tokens = new Map<string, string>()

  async present(target: ChallengeTarget): Promise<void> {
    this.#tokens.set(target.token, target.keyAuthorization)
  }

  async cleanup(target: ChallengeTarget): Promise<void> {
    this.#tokens.delete(target.token)
  }

  /** answer gives the body for a request path, or undefined when it is no pending token's. */
  answer(path: string): string | undefined {
    if (!path.startsWith(HTTP01_PREFIX)) return undefined
    return this.#tokens.get(path.slice(HTTP01_PREFIX.length))
  }
}
