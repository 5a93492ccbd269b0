/** @module p2c: power of two random choices on load (inFlight / weight), the default balancer. */
import type { Backend } from "../backend.ts"
import type { Balancer, PickContext } from "../balancer.ts"
import { effectiveWeight } from "../health/slow-start.ts"
import { inTier, tierCount } from "./tiers.ts"

/**
 * PowerOfTwo draws two distinct eligible backends at random and takes the less loaded (inFlight / weight); on a tie,
 * the first drawn. Two choices avoid both the herd that least-conn sends to a
 * just-freed backend from many workers and the imbalance of a single random choice (Mitzenmacher, "The Power of
 * Two Choices in Randomized Load Balancing"). Weights count twice: in the load, and in the draw, which is weighted;
 * with ties going to the first draw, an idle pool splits exactly in proportion to weight.
 */
export class PowerOfTwo implements Balancer {
  readonly #random: () => number

  /** random returns a number in [0, 1); inject a seeded one in tests. */
  constructor(random: () => number = Math.random) {
    this.#random = random
  }

  pick(backends: readonly Backend[], context?: PickContext): Backend | undefined {
    const exclude = context?.exclude
    const tiers = tierCount(context)
    const now = Date.now()
    for (let tier = 0; tier < tiers; tier++) {
      let count = 0
      let total = 0
      let only: Backend | undefined
      for (const backend of backends) {
        if (!inTier(backend, tier, exclude, now)) continue
        count++
        total += effectiveWeight(backend, now)
        only = backend
      }
      if (count === 0) continue
      if (count === 1) return only
      const first = this.#draw(backends, tier, exclude, now, total, undefined)
      const firstWeight = effectiveWeight(first, now)
      // Draw the second from the others: the total without the first's weight.
      const second = this.#draw(backends, tier, exclude, now, total - firstWeight, first)
      const a = first.inFlight / firstWeight
      const b = second.inFlight / effectiveWeight(second, now)
      return b < a ? second : first
    }
    return undefined
  }

  /** #draw picks an eligible backend other than `skip` with probability weight / total. */
  #draw(
    backends: readonly Backend[],
    tier: number,
    exclude: ReadonlySet<Backend> | undefined,
    now: number,
    total: number,
    skip: Backend | undefined,
  ): Backend {
    let target = this.#random() * total
    let last: Backend | undefined
    for (const backend of backends) {
      if (backend === skip || !inTier(backend, tier, exclude, now)) continue
      last = backend
      target -= effectiveWeight(backend, now)
      if (target < 0) return backend
    }
    // Rounding can leave target a hair above zero after the last backend: that one was drawn.
    return last!
  }
}
