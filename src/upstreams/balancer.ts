/** @module balancer: the one-method interface every load-balancing policy implements. */
import type { Backend } from "./backend.ts"

/** What a balancer may look at besides the backends: the request's hash key, if the policy uses one. */
export interface PickContext {
  /** The value hashed by the hash balancer (client IP, a header, a cookie or the path). */
  key?: string
  /** Backends already tried for this request (retries go elsewhere). */
  exclude?: ReadonlySet<Backend>
}

/**
 * Balancer picks one available backend for a request, or undefined when none is.
 * Called once per request on the hot path: it must be O(backends) at most, allocate nothing, and never block.
 */
export interface Balancer {
  pick(backends: readonly Backend[], context?: PickContext): Backend | undefined
}
