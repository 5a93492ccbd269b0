/**
 * @module runtime-state: what outlives a generation, in one place: the metrics registry, the session-ticket key
 * ring and the per-client gate tables. The runtime owns one RuntimeState and hands it to each generation it builds.
 */
import type { ClientLimiter } from "../listeners/limits/client-limiter.ts"
import { ClientCensus } from "../tls/client-census.ts"
import { ByKey } from "./by-key.ts"
import { Instruments } from "./instruments.ts"
import { MetricsRegistry } from "./registry.ts"
import { MemoryTicketKeyRing, type TicketKeyRing } from "./ticket-keys.ts"

/** RuntimeStateOptions: implementations to use instead of the in-memory defaults (a shared ring, say). */
export interface RuntimeStateOptions {
  registry?: MetricsRegistry
  ticketKeys?: TicketKeyRing
}

/**
 * RuntimeState: long-lived state by name and address. Counters are keyed by listener name, upstream name and bound
 * address; client gate tables by listener address (a reload applies new limits to the same table, so a client's
 * open connections and spent tokens still count); every generation's SecureContexts take the ring's current key.
 */
export class RuntimeState {
  readonly registry: MetricsRegistry
  readonly instruments: Instruments
  readonly ticketKeys: TicketKeyRing
  /** Per-client limiters by listener address. */
  readonly clientLimiters = new ByKey<ClientLimiter>((limiter) => limiter.close())
  /** ClientHello censuses by listener name: a reload keeps the window (a new census_window starts a new one). */
  readonly #censuses = new Map<string, ClientCensus>()

  constructor(options: RuntimeStateOptions = {}) {
    this.registry = options.registry ?? new MetricsRegistry()
    this.instruments = new Instruments(this.registry)
    this.ticketKeys = options.ticketKeys ?? new MemoryTicketKeyRing()
  }

  /** census returns the listener's ClientHello census of `size` records, made on first use or when the size changed. */
  census(listener: string, size: number): ClientCensus {
    let census = this.#censuses.get(listener)
    if (census === undefined || census.size !== size) {
      census = new ClientCensus(size)
      this.#censuses.set(listener, census)
    }
    return census
  }

  /** retainCensuses drops the censuses of listeners the running generation no longer has (or counts). */
  retainCensuses(listeners: Iterable<string>): void {
    const keep = new Set(listeners)
    for (const name of this.#censuses.keys()) if (!keep.has(name)) this.#censuses.delete(name)
  }

  /** close ends what holds timers (the gate tables' sweeps); counters and keys stay readable. */
  close(): void {
    this.clientLimiters.clear()
  }
}
