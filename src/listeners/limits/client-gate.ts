/** @module client-gate: a listener's per-client limits, in front of its engine (connections) and in it (request rate). */
import type { TLSSocket } from "node:tls"
import type { ListenerConfig } from "../../config/schema.ts"
import { infoOf } from "../../core/connection-info.ts"
import type { Engine } from "../tls-listener.ts"
import { ClientLimiter, type ClientLimiterOptions, type ClientLimiterStatus, clientKey } from "./client-limiter.ts"

/** GateLimits: the limits one generation sets for a listener. */
export type GateLimits = Pick<ClientLimiterOptions, "maxConnections" | "rate">

const kGate = Symbol("portcullis.clientGate")
type WithGate = { [kGate]?: { gate: ClientGate; key: string } }

/**
 * ClientGate applies `limits.per_client_connections` and `limits.rate` per client IP (its /64 for IPv6), using the
 * client address a PROXY header gave when there was one. Connections over the limit are closed right after the
 * handshake (the client address is known only then when PROXY protocol is used); requests over the rate get 429
 * from the http engine, which calls takeRequest().
 */
export class ClientGate {
  readonly limiter: ClientLimiter
  /** The limits this generation sets; apply() puts them on a limiter shared across generations. */
  readonly limits: GateLimits
  /** The limiter is this gate's alone (not a runtime's table): close() ends it. */
  readonly #owned: boolean

  constructor(limiter: ClientLimiter, limits?: GateLimits) {
    this.limiter = limiter
    this.limits = limits ?? { maxConnections: 0 }
    this.#owned = limits === undefined
    limiter.start()
  }

  /**
   * fromConfig makes a gate when the listener sets a per-client limit, else returns undefined (nothing to do).
   * With `table`, the limiter comes from it (the runtime's, by listener address, kept across reloads) and this
   * generation's limits reach it only on apply(), once the generation is in service.
   */
  static fromConfig(
    limits: ListenerConfig["limits"],
    table?: (limits: GateLimits) => ClientLimiter,
  ): ClientGate | undefined {
    const rate = limits.rate && {
      perSecond: limits.rate.per_second,
      burst: limits.rate.burst ?? Math.max(1, Math.ceil(limits.rate.per_second)),
    }
    const maxConnections = limits.per_client_connections ?? 0
    if (maxConnections === 0 && rate === undefined) return undefined
    if (table) return new ClientGate(table({ maxConnections, rate }), { maxConnections, rate })
    return new ClientGate(new ClientLimiter({ maxConnections, rate }))
  }

  /** apply sets this generation's limits on the shared limiter (no-op for a gate that owns its limiter). */
  apply(): void {
    if (!this.#owned) this.limiter.configure(this.limits)
  }

  /** wrap returns an engine that counts each client's connections before handing them on. */
  wrap(engine: Engine): Engine {
    return new GatedEngine(this, engine)
  }

  /** takeRequest spends one of the client's request tokens; false: answer 429 with retryAfter(). */
  takeRequest(address: string): boolean {
    return this.limiter.takeRequest(clientKey(address))
  }

  /** retryAfter is the whole seconds (at least 1) until the client may send a request again. */
  retryAfter(address: string): number {
    return Math.max(1, this.limiter.retryAfterSeconds(clientKey(address)))
  }

  /** close ends an owned limiter; a shared one belongs to the runtime, which ends it. */
  close(): void {
    if (this.#owned) this.limiter.close()
  }

  status(): ClientLimiterStatus {
    return this.limiter.status()
  }
}

/** GatedEngine refuses a client's connection past per_client_connections, else passes it to the engine. */
class GatedEngine implements Engine {
  readonly #gate: ClientGate
  readonly #engine: Engine

  constructor(gate: ClientGate, engine: Engine) {
    this.#gate = gate
    this.#engine = engine
  }

  handle(socket: TLSSocket): void {
    const info = infoOf(socket)
    const key = clientKey(info?.clientAddress ?? socket.remoteAddress ?? "")
    if (!this.#gate.limiter.openConnection(key)) {
      socket.destroy()
      return
    }
    ;(socket as WithGate)[kGate] = { gate: this.#gate, key }
    socket.once("close", onGatedClose)
    this.#engine.handle(socket)
  }

  close(graceMs: number, closeIdle?: boolean): Promise<void> {
    return this.#engine.close(graceMs, closeIdle)
  }

  destroy(): void {
    this.#engine.destroy()
  }

  get connections(): number {
    return this.#engine.connections
  }
}

function onGatedClose(this: TLSSocket): void {
  const entry = (this as WithGate)[kGate]
  if (entry) entry.gate.limiter.closeConnection(entry.key)
}
