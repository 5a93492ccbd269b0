/** @module solver: ChallengeSolver, the one interface the http-01, tls-alpn-01 and dns-01 responders implement. */

/** ChallengeTarget: what a solver needs of one challenge (RFC 8555 §8). */
export interface ChallengeTarget {
  /** the identifier's name as the CA validates it (without "*." for a wildcard) */
  name: string
  token: string
  /** the key authorization (RFC 8555 §8.1); for dns-01 already its base64url SHA-256 digest (§8.4) */
  keyAuthorization: string
}

/**
 * ChallengeSolver makes one challenge answerable before the CA is told to validate it (`present`), and stops
 * answering afterwards (`cleanup`, also after a failure). Neither runs in a handshake.
 */
export interface ChallengeSolver {
  readonly type: "http-01" | "tls-alpn-01" | "dns-01"
  present(target: ChallengeTarget): Promise<void>
  cleanup(target: ChallengeTarget): Promise<void>
}
