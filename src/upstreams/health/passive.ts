/** @module passive: outlier detection; a backend that keeps failing real requests is ejected for a while. */
import type { FailureKind } from "../../core/failure.ts"
import type { Logger } from "../../core/log.ts"
import { formatDuration } from "../../core/units.ts"
import type { Backend } from "../backend.ts"

export { effectiveWeight } from "./slow-start.ts"

/**
 * OutlierKind is how a request to a backend failed: a classified backend failure (core/failure.ts; only the
 * upstream passes them, and only those whose source is the backend), or a 5xx response, counted only when count5xx
 * is on.
 */
export type OutlierKind = FailureKind | "5xx"

/** OutlierOptions is the upstream's `passive` config slice (durations in ms). */
export interface OutlierOptions {
  /** Consecutive failures that eject a backend (default 5). */
  consecutiveErrors?: number
  /** First ejection time in ms; each further ejection doubles it (default 30,000). */
  baseEjection?: number
  /** Longest ejection in ms (default 300,000). */
  maxEjection?: number
  /** Count 5xx responses as failures (default true). */
  count5xx?: boolean
  /**
   * Most backends, in percent of `backends`, ejected at once (default 50). One backend may always be ejected.
   * Stops a fault shared by every backend (a bad deploy, a DB outage) from emptying the pool.
   */
  maxEjectedPercent?: number
  /** The upstream's backends, for maxEjectedPercent; without them there is no such cap. */
  backends?: readonly Backend[]
  /** Names the upstream in log lines. */
  upstream?: string
  log?: Logger
}

interface OutlierRecord {
  failures: number
  timesEjected: number
  lastEjectedAt: number
  /** The client address and route of the streak's first failure (see FailureSource). */
  client: string | undefined
  route: object | undefined
  /** The streak has failures from more than one client or route (or from an unknown one). */
  mixed: boolean
}

/**
 * FailureSource is who saw a failure: the client's address and the route it came through (any object that is one
 * per route). A backend that is the upstream's only one is ejected only when its failures come from more than one
 * source: one client that keeps asking for a path that breaks the backend must not take it away from everyone.
 * A failure without a source counts as a new source.
 */
export interface FailureSource {
  client?: string | undefined
  route?: object | undefined
}

/** OutlierStatus is one backend's passive health for the admin API. */
export interface OutlierStatus {
  id: string
  consecutiveFailures: number
  timesEjected: number
  ejectedUntil: number
}

/**
 * OutlierDetector watches the outcome of real requests. After `consecutiveErrors` failures in a row it ejects the
 * backend (sets `backend.ejectedUntil`) for baseEjection × 2^(ejections − 1), capped at maxEjection; balancers skip
 * it until then. When the ejection ends the backend comes back with slow start (`returnedAt` is set to the end of
 * the ejection). A success more than 2 × maxEjection after the last ejection resets the doubling.
 * The only backend of an upstream is ejected only by failures from more than one client or route (FailureSource);
 * when every backend is ejected anyway, Upstream.pick ignores the ejections (panic mode) rather than answer 503.
 * Failures of requests that were already in flight while the backend is ejected are ignored. The engine calls
 * onSuccess/onFailure once per request (http) or connection (tcp); both are O(1).
 * Records are keyed by backend id, so a detector kept across a reload keeps its counts for the same addresses.
 */
export class OutlierDetector {
  readonly consecutiveErrors: number
  readonly baseEjection: number
  readonly maxEjection: number
  readonly count5xx: boolean
  readonly maxEjectedPercent: number
  readonly #backends: readonly Backend[] | undefined
  readonly #upstream: string
  readonly #log: Logger | undefined
  readonly #records = new Map<string, OutlierRecord>()

  constructor(options: OutlierOptions = {}) {
    this.consecutiveErrors = options.consecutiveErrors ?? 5
    this.baseEjection = options.baseEjection ?? 30_000
    this.maxEjection = options.maxEjection ?? 300_000
    this.count5xx = options.count5xx ?? true
    this.maxEjectedPercent = options.maxEjectedPercent ?? 50
    this.#backends = options.backends
    this.#upstream = options.upstream ?? "?"
    this.#log = options.log
  }

  /** onSuccess ends the backend's failure streak. */
  onSuccess(backend: Backend, now = Date.now()): void {
    const record = this.#records.get(backend.id)
    if (record === undefined) return
    record.failures = 0
    if (record.timesEjected > 0 && now - record.lastEjectedAt > this.maxEjection * 2) record.timesEjected = 0
    if (record.timesEjected === 0) this.#records.delete(backend.id)
  }

  /** onFailure counts a failure (seen by `source`); returns true when this one ejected the backend. */
  onFailure(backend: Backend, kind: OutlierKind, now = Date.now(), source?: FailureSource): boolean {
    if (kind === "5xx" && !this.count5xx) return false
    if (backend.ejectedUntil > now) return false
    let record = this.#records.get(backend.id)
    if (record === undefined) {
      record = { failures: 0, timesEjected: 0, lastEjectedAt: 0, client: undefined, route: undefined, mixed: false }
      this.#records.set(backend.id, record)
    }
    const client = source?.client
    const route = source?.route
    if (record.failures === 0) {
      record.client = client
      record.route = route
      record.mixed = client === undefined
    } else if (client === undefined || client !== record.client || route !== record.route) {
      record.mixed = true
    }
    record.failures++
    if (record.failures < this.consecutiveErrors) return false
    if (!record.mixed && this.#backends?.length === 1) {
      if (record.failures === this.consecutiveErrors) {
        this.#log?.warn(
          { upstream: this.#upstream, backend: backend.id, client },
          `backend ${backend.id}, the only one of upstream ${this.#upstream}, is failing (${kind}) for one client and route only: not ejected`,
        )
      }
      return false
    }
    if (!this.#mayEject(now)) {
      this.#log?.warn(
        { upstream: this.#upstream, backend: backend.id },
        `backend ${backend.id} of upstream ${this.#upstream} is failing (${kind}) but not ejected: ${this.maxEjectedPercent}% of backends already are`,
      )
      return false
    }
    record.failures = 0
    record.client = undefined
    record.route = undefined
    record.timesEjected++
    record.lastEjectedAt = now
    const duration = Math.min(this.maxEjection, this.baseEjection * 2 ** (record.timesEjected - 1))
    backend.ejectedUntil = now + duration
    backend.returnedAt = backend.ejectedUntil
    this.#log?.warn(
      { upstream: this.#upstream, backend: backend.id, ejectedFor: duration },
      `backend ${backend.id} of upstream ${this.#upstream} ejected for ${formatDuration(duration)} after ${this.consecutiveErrors} consecutive failures (last: ${kind})`,
    )
    return true
  }

  /** ejectionDuration is how long the next ejection of this backend would last, in ms. */
  ejectionDuration(backend: Backend): number {
    const times = (this.#records.get(backend.id)?.timesEjected ?? 0) + 1
    return Math.min(this.maxEjection, this.baseEjection * 2 ** (times - 1))
  }

  status(): OutlierStatus[] {
    const out: OutlierStatus[] = []
    for (const [id, record] of this.#records) {
      const backend = this.#backends?.find((b) => b.id === id)
      out.push({
        id,
        consecutiveFailures: record.failures,
        timesEjected: record.timesEjected,
        ejectedUntil: backend?.ejectedUntil ?? 0,
      })
    }
    return out
  }

  #mayEject(now: number): boolean {
    const backends = this.#backends
    if (backends === undefined || backends.length === 0) return true
    let ejected = 0
    for (const b of backends) if (b.ejectedUntil > now) ejected++
    if (ejected === 0) return true
    return ((ejected + 1) * 100) / backends.length <= this.maxEjectedPercent
  }
}
