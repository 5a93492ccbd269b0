/** @module retry-policy: whether a failed backend attempt may be tried again on another backend. */

/** IDEMPOTENT_METHODS: RFC 9110 §9.2.2; repeating one of these has the same effect as sending it once. */
export const IDEMPOTENT_METHODS: ReadonlySet<string> = new Set(["GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"])

/** RetryState is what the engine knows about a request after an attempt failed. */
export interface RetryState {
  /** The request method, upper case. */
  method: string
  /** Bytes of the request (head or body) written to the failed backend connection. */
  bytesSent: number
  /** Whether any byte of the response reached the client (then the exchange is committed). */
  responseStarted: boolean
  /** Attempts made so far, counting the one that failed (1 after the first). */
  attempt: number
  /** The upstream's `retries`: extra attempts allowed after the first (0 = never retry). */
  retries: number
  /** When the first attempt started (ms since epoch). */
  startedAt: number
  /** Overall time budget for all attempts in ms (0 = no limit beyond the per-attempt timeouts). */
  tryDuration: number
  /** Whether the request body is held in memory (or there is none), so it can be sent again. */
  bodyBuffered: boolean
  /** Now, in ms since epoch; defaults to Date.now() (tests pass it). */
  now?: number
}

/**
 * canRetry says whether the request may go to another backend. A retry is allowed while attempts and time remain,
 * the client has seen nothing of the response, and either the backend received no byte of the request (it cannot
 * have acted on it) or the method is idempotent and the body can be replayed. A non-idempotent request (POST,
 * PATCH) that reached the backend is never repeated: the backend may have acted on it before failing.
 */
export function canRetry(state: RetryState): boolean {
  if (state.responseStarted) return false
  if (state.attempt > state.retries) return false
  if (state.tryDuration > 0 && (state.now ?? Date.now()) - state.startedAt >= state.tryDuration) return false
  if (state.bytesSent === 0) return true
  return state.bodyBuffered && IDEMPOTENT_METHODS.has(state.method)
}
