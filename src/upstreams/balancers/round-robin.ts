/** @module round-robin: smooth weighted round robin, nginx's algorithm: weights are honoured without bursts. */
import type { Backend } from "../backend.ts"
import type { Balancer, PickContext } from "../balancer.ts"
import { effectiveWeight } from "../health/slow-start.ts"
import { inTier, tierCount } from "./tiers.ts"

/**
 * RoundRobin spreads picks in proportion to weight and interleaves them: weights 5,1,1 give a a b a c a a, not
 * a a a a a b c. Each pick adds every eligible backend's weight to its running score, takes the highest score and
 * subtracts the total weight from it (nginx's ngx_http_upstream_get_peer). Backends that are not eligible for this
 * pick take no part, so a backend coming back does not get a burst of its saved-up share.
 */
export class RoundRobin implements Balancer {
  #list: readonly Backend[] | undefined
  /** Running scores, by index in #list; reset when the list changes. */
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
      let best = -1
      let total = 0
      for (let i = 0; i < backends.length; i++) {
        const backend = backends[i]!
        if (!inTier(backend, tier, exclude, now)) continue
        const weight = effectiveWeight(backend, now)
        current[i]! += weight
        total += weight
        if (best === -1 || current[i]! > current[best]!) best = i
      }
      if (best !== -1) {
        current[best]! -= total
        return backends[best]
      }
    }
    return undefined
  }
}
