/**
 * @module runtime-state: what outlives a generation, in one place: the metrics registry, the session-ticket key
 * ring and the per-client gate tables. The runtime owns one RuntimeState and hands it to each generation it builds.
 */
import type { ClientLimiter } from "../listeners/limits/client-limiter.ts"
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

  constructor(options: RuntimeStateOptions = {}) {
    this.registry = options.registry ?? new MetricsRegistry()
    this.instruments = new Instruments(this.registry)
    this.ticketKeys = options.ticketKeys ?? new MemoryTicketKeyRing()
  }

  /** close ends what holds timers (the gate tables' sweeps); counters and keys stay readable. */
  close(): void {
    this.clientLimiters.clear()
  }
}
