/**
 * @module hash: consistent hashing on the request's key (client IP, a header, a cookie or the path).
 *
 * We use weighted rendezvous hashing (highest random weight) rather than a ring with virtual nodes:
 * - remapping is minimal by construction: removing one of N backends moves exactly the keys it owned (about 1/N),
 *   and spreads them over all the others in proportion to weight, where a ring hands them to ring neighbours;
 * - weights are exact (score = weight / -ln(u), the logarithmic method of Schindelhauer and Schomaker), where a
 *   ring only approximates them with many virtual nodes;
 * - "walk to the next backend" when the owner is down is simply the next-highest score for that key, which is the
 *   same for every request with that key, and also handles context.exclude and backups with no extra structure;
 * - memory is one 32-bit seed per backend, precomputed when the backend list changes, instead of 100+ ring points.
 * The price is O(backends) hashing per pick instead of O(log points): two integer mixes and a log per backend,
 * well under a microsecond for the tens of backends an upstream has. Past a few hundred backends a ring would win.
 */
import type { Backend } from "../backend.ts"
import type { Balancer, PickContext } from "../balancer.ts"
import { fmix32, fnv1a32 } from "./hash-functions.ts"
import { RoundRobin } from "./round-robin.ts"
import { inTier, tierCount } from "./tiers.ts"

/** 2^-32: maps a 32-bit hash to (0, 1). */
const TO_UNIT = 1 / 4294967296

/**
 * ConsistentHash sends every request with the same `context.key` to the same backend while that backend is
 * available, and to that key's next-highest-scoring backend when it is not. Requests without a key are spread
 * by smooth weighted round robin. Weights are the configured ones (slow start is not applied, so keys do not move
 * while a backend ramps up).
 */
export class ConsistentHash implements Balancer {
  #list: readonly Backend[] | undefined
  /** Per-backend hash seeds, by index in #list; built once per backend list. */
  #seeds = new Uint32Array(0)
  readonly #keyless = new RoundRobin()

  pick(backends: readonly Backend[], context?: PickContext): Backend | undefined {
    const key = context?.key
    if (key === undefined) return this.#keyless.pick(backends, context)
    if (backends !== this.#list || this.#seeds.length !== backends.length) this.#build(backends)
    const seeds = this.#seeds
    const keyHash = fnv1a32(key)
    const exclude = context?.exclude
    const tiers = tierCount(context)
    const now = Date.now()
    for (let tier = 0; tier < tiers; tier++) {
      let best = -1
      let bestScore = -1
      for (let i = 0; i < backends.length; i++) {
        const backend = backends[i]!
        if (!inTier(backend, tier, exclude, now)) continue
        const score = backendScore(keyHash, seeds[i]!, backend.weight)
        if (score > bestScore) {
          best = i
          bestScore = score
        }
      }
      if (best !== -1) return backends[best]
    }
    return undefined
  }

  #build(backends: readonly Backend[]): void {
    this.#list = backends
    this.#seeds = new Uint32Array(backends.length)
    // Seeds depend on the backend id alone, so a backend keeps its keys across reloads and list reorderings.
    for (let i = 0; i < backends.length; i++) this.#seeds[i] = fmix32(fnv1a32(backends[i]!.id))
  }
}

/** backendScore is weight / -ln(u), u being the (key, backend) hash mapped into (0, 1); the highest score wins. */
export function backendScore(keyHash: number, seed: number, weight: number): number {
  const mixed = fmix32(fmix32(keyHash ^ seed) + seed)
  const u = (mixed + 0.5) * TO_UNIT
  return weight / -Math.log(u)
}
