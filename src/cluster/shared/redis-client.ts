/**
 * @module redis-client: the fleet store's connection to Redis or Valkey, over ioredis (project dependency since
 * main's f80495b): reconnect with capped backoff, and commands that fail at once while the connection is down.
 */
import { EventEmitter } from "node:events"
import { Redis } from "ioredis"
import { PortcullisError } from "../../core/errors.ts"

/** A reply as ioredis's callBuffer gives it: bulk strings as Buffers, integers as numbers, arrays, null. */
export type Reply = Buffer | number | null | Reply[]

/** RedisClientOptions: the redis:// URL, the reconnect backoff (doubling from minMs up to maxMs), a command timeout. */
export interface RedisClientOptions {
  url: string
  backoffMinMs?: number
  backoffMaxMs?: number
  /** A command not answered within this many ms fails and the connection is remade (default 2000). */
  commandTimeoutMs?: number
}

/**
 * RedisClient: one ioredis connection with no offline queue (enableOfflineQueue: false, maxRetriesPerRequest: 0),
 * so a command sent while the connection is down fails at once (PC_STORE_UNAVAILABLE) rather than waiting for
 * Redis; callers keep what they have and retry on their own schedule. A command timeout on a hung server drops
 * the connection, so `ready` says false until the server answers again. Events: "ready" after each (re)connect,
 * "down" once per lost connection, "message" (channel) for subscriptions, which ioredis sends again on reconnect.
 */
export class RedisClient extends EventEmitter {
  readonly #redis: Redis
  #ready = false

  constructor(options: RedisClientOptions) {
    super()
    const min = options.backoffMinMs ?? 100
    const max = options.backoffMaxMs ?? 2000
    this.#redis = new Redis(options.url, {
      lazyConnect: true,
      enableOfflineQueue: false,
      maxRetriesPerRequest: 0,
      commandTimeout: options.commandTimeoutMs ?? 2000,
      connectTimeout: options.commandTimeoutMs ?? 2000,
      retryStrategy: (times) => Math.min(max, min * 2 ** Math.min(times - 1, 16)),
      // A subscription's reply is the confirmation only; ready-check INFO is still sent on each connect.
      autoResubscribe: true,
    })
    this.#redis.on("ready", () => {
      this.#ready = true
      this.emit("ready")
    })
    const lost = () => {
      if (!this.#ready) return
      this.#ready = false
      this.emit("down")
    }
    this.#redis.on("close", lost)
    this.#redis.on("end", lost)
    // Connection errors are reported by the store once (via "down"), not per attempt.
    this.#redis.on("error", () => {})
    this.#redis.on("message", (channel: string) => this.emit("message", channel))
  }

  get ready(): boolean {
    return this.#ready
  }

  /** connect starts the connection loop; resolves true on the first "ready", false after timeoutMs (still trying). */
  connect(timeoutMs = 2000): Promise<boolean> {
    if (this.#ready) return Promise.resolve(true)
    this.#redis.connect().catch(() => {})
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.off("ready", onReady)
        resolve(false)
      }, timeoutMs)
      const onReady = () => {
        clearTimeout(timer)
        resolve(true)
      }
      this.once("ready", onReady)
    })
  }

  /** command sends one command; rejects at once when the connection is not ready. */
  async command(name: string, ...args: (string | Buffer | number)[]): Promise<Reply> {
    if (!this.#ready) throw new PortcullisError("PC_STORE_UNAVAILABLE", "the store is not connected")
    try {
      return (await this.#redis.callBuffer(name, ...args)) as Reply
    } catch (err) {
      // A hung server: remake the connection, so `ready` is false until it answers again.
      if (err instanceof Error && /timed out/i.test(err.message)) this.#redis.disconnect(true)
      throw err
    }
  }

  /** subscribe adds a channel; its messages arrive as "message" events. Use a client for subscriptions only. */
  subscribe(channel: string): void {
    if (this.#ready) this.#redis.subscribe(channel).catch(() => {})
    else this.#redis.once("ready", () => void this.#redis.subscribe(channel).catch(() => {}))
  }

  close(): void {
    this.#redis.disconnect(false)
  }
}
