/** @module renewal: when to renew a certificate (ARI window, renew_before, two thirds of its lifetime) and backoff. */

/** RenewalWindow: the CA's suggested window (RFC 9773 §4.2), ms since the epoch. */
export interface RenewalWindow {
  start: number
  end: number
}

/** RenewalPolicy: what decides the renewal time of one certificate. */
export interface RenewalPolicy {
  /** acme.renew_before: renew when less than this is left */
  renewBeforeMs?: number | undefined
  /** the CA's ARI window for this certificate, when its directory offers renewalInfo */
  window?: RenewalWindow | undefined
}

/**
 * renewalTime picks when to renew a certificate valid from notBefore to notAfter (ms):
 * - inside the ARI window, at a uniformly random time (RFC 9773 §4.2: so that a fleet does not renew at once);
 * - else renew_before ahead of notAfter, less a jitter of up to a tenth of the time before that point (at most an
 *   hour), so the jitter never moves the renewal before the certificate's first tenth of life;
 * - else at two thirds of the lifetime (Let's Encrypt's advice), less a jitter of up to a thirtieth of it.
 * `random` gives [0, 1).
 */
export function renewalTime(notBefore: number, notAfter: number, policy: RenewalPolicy, random = Math.random): number {
  const window = policy.window
  if (window && window.end >= window.start) return window.start + random() * (window.end - window.start)
  const lifetime = Math.max(0, notAfter - notBefore)
  if (policy.renewBeforeMs !== undefined) {
    const jitter = random() * Math.min(Math.max(0, lifetime - policy.renewBeforeMs) / 10, 3_600_000)
    return notAfter - policy.renewBeforeMs - jitter
  }
  return notBefore + (lifetime * 2) / 3 - random() * (lifetime / 30)
}

/**
 * backoffDelay is the wait after the `failures`-th failure in a row (1, 2, ...): initial, doubled each time, at
 * most max, with up to 10% jitter added so that many names failing together do not retry together.
 */
export function backoffDelay(failures: number, initialMs: number, maxMs: number, random = Math.random): number {
  const base = Math.min(maxMs, initialMs * 2 ** Math.max(0, failures - 1))
  return Math.min(maxMs, base + random() * base * 0.1)
}
