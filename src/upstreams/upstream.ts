/** @module upstream: a named pool of backends with a balancer and one keep-alive connection pool per backend. */
import type { Pool } from "undici"
import type { UpstreamConfig } from "../config/schema.ts"
import type { Logger } from "../core/log.ts"
import { Backend } from "./backend.ts"
import type { Balancer, PickContext } from "./balancer.ts"
import { createBalancer } from "./balancers/index.ts"
import { type BackendTls, createBackendPool, loadBackendTls } from "./connector.ts"

/** UpstreamStatus is the admin API's view of an upstream. */
export interface UpstreamStatus {
  name: string
  balance: string
  backends: { id: string; state: string; weight: number; backup: boolean; inFlight: number; ejected: boolean }[]
}

/** Upstream owns its backends, picks one per request and gives out that backend's connection pool. */
export class Upstream {
  readonly name: string
  readonly config: UpstreamConfig
  readonly backends: readonly Backend[]
  readonly tls: BackendTls | undefined
  readonly #balancer: Balancer
  readonly #pools = new Map<Backend, Pool>()

  constructor(name: string, config: UpstreamConfig, log: Logger) {
    this.name = name
    this.config = config
    this.tls = loadBackendTls(name, config, log)
    this.backends = config.backends.map(
      (b) => new Backend({ address: b.address, weight: b.weight, backup: b.backup, maxConnections: b.max_connections }),
    )
    this.#balancer = createBalancer(config.balance)
  }

  /** pick chooses an available backend, or undefined when none is. */
  pick(context?: PickContext): Backend | undefined {
    return this.#balancer.pick(this.backends, context)
  }

  /** poolFor returns the backend's keep-alive pool, made on first use. */
  poolFor(backend: Backend): Pool {
    let pool = this.#pools.get(backend)
    if (!pool) {
      pool = createBackendPool(backend, this.config, this.tls)
      this.#pools.set(backend, pool)
    }
    return pool
  }

  /** close lets requests in flight finish, then closes the pools. */
  async close(): Promise<void> {
    await Promise.allSettled([...this.#pools.values()].map((p) => p.close()))
  }

  /** destroy closes every backend connection now. */
  async destroy(): Promise<void> {
    await Promise.allSettled([...this.#pools.values()].map((p) => p.destroy()))
  }

  status(): UpstreamStatus {
    const now = Date.now()
    return {
      name: this.name,
      balance: this.config.balance,
      backends: this.backends.map((b) => ({
        id: b.id,
        state: b.state,
        weight: b.weight,
        backup: b.backup,
        inFlight: b.inFlight,
        ejected: b.ejectedUntil > now,
      })),
    }
  }
}
