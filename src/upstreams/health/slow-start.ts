/** @module slow-start: the weight a backend gets while it ramps back up after returning (health up, ejection over). */
import type { Backend } from "../backend.ts"

/** The share of its weight a backend gets the moment it returns, so it is never starved of probes (Envoy's 10%). */
export const SLOW_START_FLOOR = 0.1

/**
 * effectiveWeight is `backend.weight` ramped linearly from 10% to 100% over `backend.slowStart` ms after
 * `backend.returnedAt`. With slow start off, or a backend that never left, it is the configured weight.
 * Balancers call it once per backend per pick, so it is a few comparisons and no allocation.
 */
export function effectiveWeight(backend: Backend, now: number): number {
  const ramp = backend.slowStart
  if (ramp <= 0 || backend.returnedAt === 0) return backend.weight
  const elapsed = now - backend.returnedAt
  if (elapsed >= ramp) return backend.weight
  const share = elapsed <= 0 ? SLOW_START_FLOOR : Math.max(SLOW_START_FLOOR, elapsed / ramp)
  return backend.weight * share
}
