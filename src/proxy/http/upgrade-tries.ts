/** @module upgrade-tries: the backends a WebSocket handshake is tried on, and whether a failed try may go to another. */
import type { Failure } from "../../core/failure.ts"
import type { Backend } from "../../upstreams/backend.ts"
import { canRetry } from "../../upstreams/retry-policy.ts"
import type { Upstream } from "../../upstreams/upstream.ts"

/**
 * UpgradeTries: a WebSocket handshake (HTTP/1.1 Upgrade, or RFC 8441 turned into one) is a GET without a body, so a
 * try that failed before any response byte may go to another backend under the upstream's retries and try_duration,
 * as the exchange's requests do (retry-policy.ts). Before, a handshake to a backend that had just died (connection
 * refused) got 502 while another backend was up (found by npm run soak: backends killed under WebSocket traffic).
 */
export class UpgradeTries {
  readonly upstream: Upstream
  readonly startedAt = Date.now()
  attempt = 0
  tried: Set<Backend> | undefined

  constructor(upstream: Upstream) {
    this.upstream = upstream
  }

  /** next picks a backend not tried yet and acquires it; undefined when there is none. */
  next(): Backend | undefined {
    const upstream = this.upstream
    const backend = upstream.pick(this.tried === undefined ? undefined : { exclude: this.tried })
    if (backend === undefined || this.tried?.has(backend)) return undefined
    this.attempt++
    upstream.acquire(backend)
    return backend
  }

  /** again: the try on `backend` failed before any response byte; true when another backend may be tried. */
  again(backend: Backend, failure: Failure): boolean {
    if (!failure.retryable) return false
    const config = this.upstream.config
    const may = canRetry({
      method: "GET",
      bytesSent: failure.phase === "connect" ? 0 : 1,
      responseStarted: false,
      attempt: this.attempt,
      retries: config.retries,
      startedAt: this.startedAt,
      tryDuration: config.try_duration,
      bodyBuffered: true,
    })
    if (!may) return false
    this.tried ??= new Set()
    this.tried.add(backend)
    this.upstream.retried()
    return true
  }
}
