/**
 * @module fleet-store: the connection of one instance to the fleet's Redis (or Valkey): the shared ticket key ring,
 * the instance list, the fleet rate counters and the certificate storage, over two connections (commands,
 * subscriptions).
 */
import { randomBytes } from "node:crypto"
import { hostname } from "node:os"
import type { ClusterConfig } from "../../config/schema.ts"
import type { Logger } from "../../core/log.ts"
import type { ClientLimiterOptions } from "../../listeners/limits/client-limiter.ts"
import { FleetClientLimiter, FleetRateSync } from "./fleet-rate.ts"
import { InstanceList, type InstanceRecord } from "./instances.ts"
import { RedisCertificateStorage } from "./redis-certificate-storage.ts"
import { RedisClient } from "./redis-client.ts"
import { RedisTicketKeyRing } from "./redis-ticket-ring.ts"

/** FleetStoreOptions: the config, who this instance is, and timings (tests shorten them). */
export interface FleetStoreOptions {
  store: NonNullable<ClusterConfig["store"]>
  log: Logger
  version: string
  /** This instance's addresses and status, read at each heartbeat. */
  self: () => Pick<InstanceRecord, "addresses" | "status">
  heartbeatMs?: number
  ringPollMs?: number
  rateWindowMs?: number
  /** How often each ACME certificate's stored copy is checked for another instance's renewal (default 60 s). */
  certificatePollMs?: number
}

/**
 * FleetStore: nothing here is on a request's path. The connections reconnect with backoff on their own; losing
 * Redis is logged once when it goes and once when it comes back, and meanwhile the instance serves with the keys
 * and counts it has.
 */
export class FleetStore {
  readonly id: string
  readonly ring: RedisTicketKeyRing
  readonly instances: InstanceList
  /** ACME's account, certificates and locks for the whole fleet (tls/acme/storage.ts's CertificateStorage). */
  readonly certificateStorage: RedisCertificateStorage
  /** How often ACME looks for a certificate another instance stored (a renewal), in ms. */
  readonly certificatePollMs: number
  readonly #client: RedisClient
  readonly #subscriber: RedisClient
  readonly #log: Logger
  readonly #rateWindowMs: number | undefined
  #down = false

  constructor(options: FleetStoreOptions) {
    this.id = `${hostname()}-${process.pid}-${randomBytes(3).toString("hex")}`
    this.#log = options.log.child({ store: "redis" })
    const url = options.store.redis
    this.#client = new RedisClient({ url })
    this.#subscriber = new RedisClient({ url })
    this.#rateWindowMs = options.rateWindowMs
    // Host and port only: the URL may carry a password.
    const parsed = new URL(url)
    const where = `${parsed.hostname}:${parsed.port || 6379}`
    this.#client.on("down", () => this.#markDown(where))
    this.#client.on("ready", () => {
      if (this.#down) this.#log.info({ address: where }, "fleet store is back; catching up")
      this.#down = false
    })
    this.ring = new RedisTicketKeyRing({
      client: this.#client,
      subscriber: this.#subscriber,
      log: this.#log,
      ...(options.ringPollMs !== undefined && { pollMs: options.ringPollMs }),
    })
    this.certificateStorage = new RedisCertificateStorage({ client: this.#client, log: this.#log })
    this.certificatePollMs = options.certificatePollMs ?? 60_000
    this.instances = new InstanceList({
      client: this.#client,
      log: this.#log,
      ...(options.heartbeatMs !== undefined && { intervalMs: options.heartbeatMs }),
      self: () => ({
        id: this.id,
        version: options.version,
        pid: process.pid,
        ...options.self(),
        updated_at: new Date().toISOString(),
      }),
    })
  }

  /**
   * start connects (waiting at most timeoutMs) and loads the ticket ring, so the first generation is built with
   * the fleet's key; if Redis is not there the instance starts on its own keys and adopts the fleet's later.
   */
  async start(timeoutMs = 2000): Promise<void> {
    const [up] = await Promise.all([this.#client.connect(timeoutMs), this.#subscriber.connect(timeoutMs)])
    if (!up) this.#markDown("the configured address")
    else await this.ring.sync()
    this.instances.start()
  }

  /** limiter makes the per-client table of a listener with `limits.rate.scope: fleet`, keyed in Redis by scope. */
  limiter(scope: string, options: ClientLimiterOptions): FleetClientLimiter {
    return new FleetClientLimiter(options, this.rates(scope))
  }

  /** rates makes the Redis reconciliation of one scope (a cluster primary feeds it its workers' counts). */
  rates(scope: string): FleetRateSync {
    return new FleetRateSync(this.#client, scope, this.#rateWindowMs)
  }

  status(): { id: string; connected: boolean } & ReturnType<InstanceList["list"]> {
    return { id: this.id, connected: this.#client.ready, ...this.instances.list() }
  }

  async close(): Promise<void> {
    await this.instances.leave()
    this.ring.close()
    this.#client.close()
    this.#subscriber.close()
  }

  #markDown(where: string): void {
    if (this.#down) return
    this.#down = true
    this.#log.warn({ address: where }, "fleet store unreachable: serving with the keys and counts held here")
  }
}
