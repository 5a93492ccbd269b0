/** @module least-conn: the backend with the fewest requests in flight for its weight. */
import type { Backend } from "../backend.ts"
import type { Balancer, PickContext } from "../balancer.ts"
import { effectiveWeight } from "../health/slow-start.ts"
import { inTier, tierCount } from "./tiers.ts"

/**
 * LeastConn picks the eligible backend with the lowest inFlight / weight. Ties are broken by smooth weighted round
 * robin among the tied backends (as nginx's least_conn does), so an idle or evenly loaded pool is spread in
 * proportion to weight, in turns, rather than all sent to the first backend.
 */
export class LeastConn implements Balancer {
  #list: readonly Backend[] | undefined
  /** Smooth round-robin scores for tie-breaks, by index in #list; reset when the list changes. */
  #current = new Float64Array(0)

  pick(backends: readonly Backend[], context?: PickContext): Backend | undefined {
    if (backends !== this.#list || this.#current.length !== backends.length) {
      this.#list = backends
      this.#current = new Float64Array(backends.length)
    }
    const exclude = context?.exclude
    const tiers = tierCount(context)
    const now = Date.now()
    const current = this.#current
    for (let tier = 0; tier < tiers; tier++) {
      let least = Number.POSITIVE_INFINITY
      for (const backend of backends) {
        if (!inTier(backend, tier, exclude, now)) continue
        const load = backend.inFlight / effectiveWeight(backend, now)
        if (load < least) least = load
      }
      if (least === Number.POSITIVE_INFINITY) continue
      // Division is correctly rounded, so equal loads (1/2 and 2/4) compare equal.
      let best = -1
      let total = 0
      for (let i = 0; i < backends.length; i++) {
        const backend = backends[i]!
        if (!inTier(backend, tier, exclude, now)) continue
        const weight = effectiveWeight(backend, now)
        if (backend.inFlight / weight !== least) continue
        current[i]! += weight
        total += weight
        if (best === -1 || current[i]! > current[best]!) best = i
      }
      current[best]! -= total
      return backends[best]
    }
    return undefined
  }
}
