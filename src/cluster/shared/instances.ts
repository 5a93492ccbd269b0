/**
 * @module instances: the fleet's instance list in Redis: each instance writes its id, version, addresses and status
 * under a key with a TTL every few seconds, and reads everyone's back for GET /status.
 */
import { errorMessage } from "../../core/errors.ts"
import type { Logger } from "../../core/log.ts"
import type { RedisClient } from "./redis-client.ts"

const PREFIX = "portcullis:instance:"
/** A sorted set of instance ids scored by when their record expires: lets a reader list them without KEYS/SCAN. */
const INDEX = "portcullis:instances"

/** InstanceRecord is what one instance says about itself. */
export interface InstanceRecord {
  id: string
  version: string
  pid: number
  /** listener name to "host:port" */
  addresses: Record<string, string>
  status: "starting" | "serving" | "draining"
  updated_at: string
}

/** InstanceListOptions: who we are (read at each heartbeat), how often we say so and for how long it holds. */
export interface InstanceListOptions {
  client: RedisClient
  log: Logger
  self: () => InstanceRecord
  intervalMs?: number
  ttlMs?: number
}

/**
 * InstanceList heartbeats this instance's record and keeps the last list it read; list() answers from that copy
 * (GET /status never waits on Redis). When Redis is down the copy stays, marked stale by its read time.
 */
export class InstanceList {
  readonly #client: RedisClient
  readonly #log: Logger
  readonly #self: () => InstanceRecord
  readonly #intervalMs: number
  readonly #ttlMs: number
  #timer: NodeJS.Timeout | undefined
  #known: InstanceRecord[] = []
  #readAt: number | undefined

  constructor(options: InstanceListOptions) {
    this.#client = options.client
    this.#log = options.log
    this.#self = options.self
    this.#intervalMs = options.intervalMs ?? 2000
    this.#ttlMs = options.ttlMs ?? 3 * this.#intervalMs
    this.#client.on("ready", () => void this.beat())
  }

  start(): void {
    this.#timer ??= setInterval(() => void this.beat(), this.#intervalMs)
    this.#timer.unref()
    void this.beat()
  }

  /** beat writes our record and reads the list; a failure keeps the last list. */
  async beat(): Promise<void> {
    if (!this.#client.ready) return
    const self = this.#self()
    const now = Date.now()
    try {
      await this.#client.command("SET", PREFIX + self.id, JSON.stringify(self), "PX", this.#ttlMs)
      await this.#client.command("ZADD", INDEX, now + this.#ttlMs, self.id)
      await this.#client.command("ZREMRANGEBYSCORE", INDEX, "-inf", now)
      const ids = await this.#client.command("ZRANGE", INDEX, 0, -1)
      if (!Array.isArray(ids) || ids.length === 0) return
      const values = await this.#client.command("MGET", ...ids.map((id) => PREFIX + String(id)))
      const known: InstanceRecord[] = []
      if (Array.isArray(values)) {
        for (const v of values) if (Buffer.isBuffer(v)) known.push(JSON.parse(v.toString()) as InstanceRecord)
      }
      this.#known = known
      this.#readAt = now
    } catch (err) {
      this.#log.debug({ err: errorMessage(err) }, "instance heartbeat failed")
    }
  }

  /** leave removes our record at once (a clean shutdown), so the list need not wait for the TTL. */
  async leave(): Promise<void> {
    clearInterval(this.#timer)
    this.#timer = undefined
    if (!this.#client.ready) return
    const id = this.#self().id
    await Promise.allSettled([this.#client.command("DEL", PREFIX + id), this.#client.command("ZREM", INDEX, id)])
  }

  /** list is the last list read, and when (undefined: never read). */
  list(): { instances: InstanceRecord[]; read_at: string | undefined } {
    return {
      instances: this.#known,
      read_at: this.#readAt === undefined ? undefined : new Date(this.#readAt).toISOString(),
    }
  }
}
