/**
 * @module tiers: the preference order every balancer applies before its own policy.
 *
 * A pick looks at the backends in up to four tiers and takes the first tier that has an available backend:
 *   0. primaries not yet tried for this request
 *   1. backups not yet tried (backups serve only when no untried primary is available)
 *   2. primaries already tried (context.exclude): a retry goes back to one only when nothing else is left
 *   3. backups already tried
 * This is nginx's order (tried primaries, then backups), plus a last resort of tried backends so a retry is
 * not refused when one backend is all there is. Without an exclude set only tiers 0 and 1 exist.
 */
import type { Backend } from "../backend.ts"
import type { PickContext } from "../balancer.ts"

/** tierCount is 4 when the context excludes backends, else 2. */
export function tierCount(context: PickContext | undefined): number {
  return context?.exclude !== undefined && context.exclude.size > 0 ? 4 : 2
}

/** inTier says whether a backend is available at `now` (read once per pick) and belongs to the tier (see the module doc). */
export function inTier(
  backend: Backend,
  tier: number,
  exclude: ReadonlySet<Backend> | undefined,
  now: number,
): boolean {
  if (backend.backup !== ((tier & 1) === 1)) return false
  if (!backend.isAvailable(now)) return false
  if (exclude === undefined || exclude.size === 0) return true
  return exclude.has(backend) === tier >= 2
}
