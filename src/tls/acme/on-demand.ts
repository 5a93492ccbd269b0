/**
 * @module on-demand: on-demand TLS (Caddy's design): a name with no certificate that matches `on_demand.names` gets
 * one at its first handshake, once the operator's `ask` URL allows it; rate-limited, with a cap on names in flight.
 */
import type { AcmeConfig } from "../../config/schema.ts"
import { errorMessage } from "../../core/errors.ts"
import type { Logger } from "../../core/log.ts"
import type { AcmeCounters } from "../../state/instruments.ts"
import { normalizeName } from "../certificate.ts"

type OnDemandConfig = NonNullable<AcmeConfig["on_demand"]>

/** How long ask may take before the name is refused. */
const ASK_TIMEOUT_MS = 5_000
/** A name ask denied (or whose order failed) is not asked again for this long; at most DENIED_MAX names kept. */
const DENIED_FOR_MS = 60_000
const DENIED_MAX = 1_024
/** A DNS host name of LDH labels (RFC 1123 §2.1), at least two labels. */
const HOST_NAME = /^(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/

/**
 * OnDemandNames is the pure part of on-demand TLS: which SNI names may be asked about at all. A cluster worker
 * checks it before it asks the primary, so a handshake for any other name costs no IPC round trip.
 */
export class OnDemandNames {
  readonly #exact = new Set<string>()
  readonly #suffixes: string[] = []

  constructor(patterns: readonly string[]) {
    for (const pattern of patterns) {
      const name = normalizeName(pattern)
      if (name === "*") this.#suffixes.push("")
      else if (name.startsWith("*.")) this.#suffixes.push(name.slice(1))
      else this.#exact.add(name)
    }
  }

  /** matches: the name is one of `names`, or one label below a `*.` pattern. */
  matches(name: string): boolean {
    if (this.#exact.has(name)) return true
    for (const suffix of this.#suffixes) {
      if (suffix === "") return /^[a-z0-9_-]+(\.[a-z0-9_-]+)+$/.test(name)
      if (name.endsWith(suffix) && name.length > suffix.length && !name.slice(0, -suffix.length).includes(".")) {
        return true
      }
    }
    return false
  }

  /** accepts gives the normalised name when the SNI name is a well-formed host name that matches, else undefined. */
  accepts(servername: string): string | undefined {
    const name = normalizeName(servername)
    // The SNI bytes are the client's: only a well-formed host name is asked about or ordered.
    if (name.length > 253 || !HOST_NAME.test(name) || !this.matches(name)) return undefined
    return name
  }
}

/**
 * OnDemand decides and starts on-demand orders. `request` is called in a handshake for a name no certificate
 * covers: it answers at once (undefined) for names it will not take, and otherwise returns a promise that settles
 * when the name has a certificate (true) or was refused (false). It never queues: a name over the rate or beyond
 * max_in_flight is refused at once, and concurrent handshakes for one name share one request.
 */
export class OnDemand {
  readonly #config: OnDemandConfig
  readonly #obtain: (name: string) => Promise<unknown>
  readonly #log: Logger
  readonly #counters: AcmeCounters
  readonly #names: OnDemandNames
  readonly #inFlight = new Map<string, Promise<boolean>>()
  readonly #denied = new Map<string, number>()
  /** Start times of the orders of the last minute (at most `rate` of them). */
  readonly #recent: number[] = []

  constructor(config: OnDemandConfig, obtain: (name: string) => Promise<unknown>, log: Logger, counters: AcmeCounters) {
    this.#config = config
    this.#obtain = obtain
    this.#log = log
    this.#counters = counters
    this.#names = new OnDemandNames(config.names)
  }

  /** matches: the name is one of `names`, or one label below a `*.` pattern. */
  matches(name: string): boolean {
    return this.#names.matches(name)
  }

  /** request: see the class comment; `name` is the ClientHello's SNI name. */
  request(servername: string): Promise<boolean> | undefined {
    const name = this.#names.accepts(servername)
    if (name === undefined) return undefined
    const shared = this.#inFlight.get(name)
    if (shared) return shared
    const now = Date.now()
    const deniedUntil = this.#denied.get(name)
    if (deniedUntil !== undefined) {
      if (now < deniedUntil) return Promise.resolve(false)
      this.#denied.delete(name)
    }
    if (this.#inFlight.size >= this.#config.max_in_flight) {
      this.#counters.onDemand("busy")
      this.#log.warn(
        { name, max_in_flight: this.#config.max_in_flight },
        "on-demand tls: too many names in flight; refused",
      )
      return Promise.resolve(false)
    }
    while (this.#recent.length > 0 && this.#recent[0]! <= now - 60_000) this.#recent.shift()
    if (this.#recent.length >= this.#config.rate) {
      this.#counters.onDemand("rate_limited")
      this.#log.warn({ name, rate: this.#config.rate }, "on-demand tls: over the rate of orders per minute; refused")
      return Promise.resolve(false)
    }
    const run = this.#run(name).finally(() => this.#inFlight.delete(name))
    this.#inFlight.set(name, run)
    return run
  }

  async #run(name: string): Promise<boolean> {
    let allowed: boolean
    try {
      allowed = await this.#ask(name)
    } catch (err) {
      this.#log.warn({ name, err: errorMessage(err) }, "on-demand tls: ask failed; refused")
      allowed = false
    }
    if (!allowed) {
      this.#counters.onDemand("denied")
      this.#deny(name)
      this.#log.info({ name }, "on-demand tls: ask denied the name")
      return false
    }
    this.#recent.push(Date.now())
    try {
      await this.#obtain(name)
      this.#counters.onDemand("issued")
      return true
    } catch (err) {
      this.#counters.onDemand("failed")
      this.#deny(name)
      this.#log.warn({ name, err: errorMessage(err) }, "on-demand tls: no certificate; the fallback is served")
      return false
    }
  }

  /** ask: GET <ask>?domain=<name>; a 2xx allows it (Caddy's contract). */
  async #ask(name: string): Promise<boolean> {
    const url = new URL(this.#config.ask)
    url.searchParams.set("domain", name)
    const res = await fetch(url, { signal: AbortSignal.timeout(ASK_TIMEOUT_MS), redirect: "manual" })
    await res.body?.cancel()
    return res.status >= 200 && res.status < 300
  }

  #deny(name: string): void {
    if (this.#denied.size >= DENIED_MAX) this.#denied.delete(this.#denied.keys().next().value!)
    this.#denied.set(name, Date.now() + DENIED_FOR_MS)
  }
}
