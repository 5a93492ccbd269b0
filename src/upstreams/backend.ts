/** @module backend: one backend of an upstream, its address, weight and live state (health, load, drain). */
import type { HostPort } from "../config/schema.ts"

/** BackendState is what health checks and the admin API set; only "up" takes new requests. */
export type BackendState = "up" | "down" | "draining"

/** Backend is one address in an upstream pool; balancers read it, the pool and health checkers update it. */
export class Backend {
  readonly id: string
  readonly address: HostPort
  readonly weight: number
  readonly backup: boolean
  readonly maxConnections: number
  state: BackendState = "up"
  /** Requests (http) or connections (tcp) in progress on this backend. */
  inFlight = 0
  /** Until this time (ms since epoch) passive health keeps the backend out. */
  ejectedUntil = 0
  /** When (ms since epoch) the backend last came back (health up, or end of an ejection); 0 if it never left. */
  returnedAt = 0
  /**
   * HTTP responses this backend began, and the sum of their times to first byte (seconds, from the request's
   * arrival): two adds per response, so the dashboard can show each backend's mean over a window.
   */
  responses = 0
  firstByteSeconds = 0
  /** Over this many ms after returnedAt its weight ramps up from 10% to full (slow start); 0 = off. */
  readonly slowStart: number

  constructor(options: {
    address: HostPort
    weight?: number
    backup?: boolean
    maxConnections?: number
    slowStart?: number
  }) {
    this.address = options.address
    this.id = options.address.host.includes(":")
      ? `[${options.address.host}]:${options.address.port}`
      : `${options.address.host}:${options.address.port}`
    this.weight = options.weight ?? 1
    this.backup = options.backup ?? false
    this.maxConnections = options.maxConnections ?? Number.POSITIVE_INFINITY
    this.slowStart = options.slowStart ?? 0
  }

  /** available: up, not ejected, and under its connection cap. */
  get available(): boolean {
    return this.isAvailable(Date.now())
  }

  /** isAvailable is `available` at a given time; balancers read the clock once per pick and pass it in. */
  isAvailable(now: number): boolean {
    return this.state === "up" && this.inFlight < this.maxConnections && this.ejectedUntil <= now
  }
}
