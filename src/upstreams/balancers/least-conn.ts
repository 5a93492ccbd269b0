/** @module least-conn: the backend with the fewest requests in flight for its weight. */
import type { Backend } from "../backend.ts"
import type { Balancer, PickContext } from "../balancer.ts"
import { effectiveWeight } from "../health/slow-start.ts"
import { inTier, tierCount } from "./tiers.ts"

/**
 * LeastConn picks the eligible backend with the lowest inFlight / weight. Ties are broken round robin: the scan
 * starts just after the previous pick and only a strictly lower load replaces the best so far, so equally loaded
 * backends take turns (an idle pool is spread evenly rather than all sent to the first backend).
 */
export class LeastConn implements Balancer {
  #next = 0

  pick(backends: readonly Backend[], context?: PickContext): Backend | undefined {
    const n = backends.length
    if (n === 0) return undefined
    const exclude = context?.exclude
    const tiers = tierCount(context)
    const now = Date.now()
    const start = this.#next % n
    for (let tier = 0; tier < tiers; tier++) {
      let best = -1
      let bestLoad = Number.POSITIVE_INFINITY
      for (let k = 0; k < n; k++) {
        const i = (start + k) % n
        const backend = backends[i]!
        if (!inTier(backend, tier, exclude)) continue
        const load = backend.inFlight / effectiveWeight(backend, now)
        if (best === -1 || load < bestLoad) {
          best = i
          bestLoad = load
        }
      }
      if (best !== -1) {
        this.#next = best + 1
        return backends[best]
      }
    }
    return undefined
  }
}
