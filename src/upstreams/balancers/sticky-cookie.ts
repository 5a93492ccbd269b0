/** @module sticky-cookie: `sticky: cookie` pins a client to the backend named in a cookie while it stays available. */
import type { Backend } from "../backend.ts"
import type { Balancer, PickContext } from "../balancer.ts"
import { fmix32, fnv1a32 } from "./hash-functions.ts"
import { inTier } from "./tiers.ts"

/** StickyContext is a PickContext plus the value of the sticky cookie the request carried, if any. */
export interface StickyContext extends PickContext {
  cookie?: string
}

/**
 * stickyValue is the cookie value naming a backend: 16 hex digits hashed from its id, so the cookie does not reveal
 * the backend address and stays the same across reloads and restarts. Not a secret and not signed: a client may pick
 * any backend by forging it, which gives it nothing it could not get by retrying.
 */
export function stickyValue(backend: Backend): string {
  const hi = fmix32(fnv1a32(backend.id))
  const lo = fmix32(fnv1a32(backend.id, 0x9747b28c))
  return hi.toString(16).padStart(8, "0") + lo.toString(16).padStart(8, "0")
}

/**
 * StickyCookie sends a request to the backend its cookie names while that backend is available, not excluded
 * (already tried by this request) and not a backup while a primary is available; otherwise the fallback balancer
 * picks. After a pick, the engine compares `valueFor(picked)` with the request's cookie and, when they differ,
 * adds `Set-Cookie: cookieFor(picked)` to the response.
 */
export class StickyCookie implements Balancer {
  readonly cookieName: string
  readonly #fallback: Balancer
  #list: readonly Backend[] | undefined
  /** Cookie value -> backend, built once per backend list. */
  #byValue = new Map<string, Backend>()
  readonly #values = new WeakMap<Backend, string>()

  constructor(fallback: Balancer, cookieName = "pc_sticky") {
    this.#fallback = fallback
    this.cookieName = cookieName
  }

  pick(backends: readonly Backend[], context?: StickyContext): Backend | undefined {
    const cookie = context?.cookie
    if (cookie !== undefined && cookie !== "") {
      if (backends !== this.#list) this.#build(backends)
      const pinned = this.#byValue.get(cookie)
      if (pinned !== undefined && this.#usable(pinned, backends, context?.exclude)) return pinned
    }
    return this.#fallback.pick(backends, context)
  }

  /** valueFor is the cookie value that pins to this backend. */
  valueFor(backend: Backend): string {
    let value = this.#values.get(backend)
    if (value === undefined) {
      value = stickyValue(backend)
      this.#values.set(backend, value)
    }
    return value
  }

  /** cookieFor is the Set-Cookie header value that pins the client to this backend for the browser session. */
  cookieFor(backend: Backend): string {
    return `${this.cookieName}=${this.valueFor(backend)}; Path=/; HttpOnly; Secure; SameSite=Lax`
  }

  #usable(pinned: Backend, backends: readonly Backend[], exclude: ReadonlySet<Backend> | undefined): boolean {
    const now = Date.now()
    if (!pinned.isAvailable(now) || exclude?.has(pinned)) return false
    if (!pinned.backup) return true
    // A backup pin holds only while no untried primary can serve: primaries take back their clients.
    for (const backend of backends) if (inTier(backend, 0, exclude, now)) return false
    return true
  }

  #build(backends: readonly Backend[]): void {
    this.#list = backends
    this.#byValue = new Map()
    for (const backend of backends) this.#byValue.set(this.valueFor(backend), backend)
  }
}

/** addStickyCookie pins the client to the backend that answered, unless its cookie already names that backend. */
export function addStickyCookie(
  out: Record<string, string | string[]>,
  sticky: StickyCookie,
  backend: Backend,
  cookie: string | undefined,
): void {
  if (cookie === sticky.valueFor(backend)) return
  const value = sticky.cookieFor(backend)
  const existing = out["set-cookie"]
  out["set-cookie"] = existing === undefined ? value : [...(Array.isArray(existing) ? existing : [existing]), value]
}
