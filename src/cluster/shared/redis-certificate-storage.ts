/**
 * @module redis-certificate-storage: the fleet's CertificateStorage in Redis (Caddy's storage design), so ACME's
 * account, certificates and locks are shared: exactly one instance orders a name, the others load what it stored.
 */
import { randomBytes } from "node:crypto"
import { errorMessage, PortcullisError } from "../../core/errors.ts"
import type { Logger } from "../../core/log.ts"
import type { CertificateStorage, StoredItem } from "../../tls/acme/storage.ts"
import type { RedisClient, Reply } from "./redis-client.ts"

/** The default prefix of every Redis key this storage writes. */
export const STORAGE_PREFIX = "portcullis:storage:"

/** A value and the index of keys change together (one script runs atomically in Redis). */
const STORE_SCRIPT = `redis.call("HSET", KEYS[1], "v", ARGV[1], "m", ARGV[2], "s", ARGV[3])
redis.call("ZADD", KEYS[2], 0, ARGV[4])
return 1`
const DELETE_SCRIPT = `redis.call("DEL", KEYS[1])
redis.call("ZREM", KEYS[2], ARGV[1])
return 1`
/** Renew and release act only for the holder's token: a lock that expired and was taken by another is left alone. */
const RENEW_SCRIPT = `if redis.call("GET", KEYS[1]) == ARGV[1] then return redis.call("PEXPIRE", KEYS[1], ARGV[2]) end
return 0`
const RELEASE_SCRIPT = `if redis.call("GET", KEYS[1]) == ARGV[1] then return redis.call("DEL", KEYS[1]) end
return 0`

/** RedisCertificateStorageOptions: the store's command connection, a key prefix, and the lock's poll interval. */
export interface RedisCertificateStorageOptions {
  client: RedisClient
  log: Logger
  /** Prefix of every key (default STORAGE_PREFIX); instances sharing certificates use the same one. */
  prefix?: string
  /** Mean time between a waiter's attempts on a held lock, ±50% jitter (default 1000 ms, at most ttlMs / 2). */
  pollMs?: number
}

/**
 * RedisCertificateStorage keeps each value in a hash at PREFIX + "v:" + key (value, modified time, secret flag) and
 * every key in one sorted set, PREFIX + "index", read by range for list(). Values are never logged, secret or not.
 * Redis down: load/store/delete/list reject at once with PC_STORE_UNAVAILABLE naming the key; lock() keeps waiting.
 * A lock is PREFIX + "lock:" + name, taken with SET NX PX and a random token, renewed every ttlMs / 3 while held,
 * and released only by its holder (compare-and-delete), so a holder that dies loses it after ttlMs.
 */
export class RedisCertificateStorage implements CertificateStorage {
  readonly #client: RedisClient
  readonly #log: Logger
  readonly #prefix: string
  readonly #pollMs: number

  constructor(options: RedisCertificateStorageOptions) {
    this.#client = options.client
    this.#log = options.log
    this.#prefix = options.prefix ?? STORAGE_PREFIX
    this.#pollMs = options.pollMs ?? 1000
  }

  async load(key: string): Promise<StoredItem | undefined> {
    checkKey(key)
    const reply = await this.#run(`load "${key}"`, "HMGET", this.#valueKey(key), "v", "m")
    if (!Array.isArray(reply) || !Buffer.isBuffer(reply[0])) return undefined
    return { value: reply[0], modifiedAt: Number(String(reply[1] ?? "0")) }
  }

  async store(key: string, value: Buffer, options: { secret?: boolean } = {}): Promise<void> {
    checkKey(key)
    const args = [this.#valueKey(key), this.#indexKey(), value, Date.now(), options.secret ? "1" : "0", key]
    await this.#run(`store "${key}"`, "EVAL", STORE_SCRIPT, 2, ...args)
  }

  async delete(key: string): Promise<void> {
    checkKey(key)
    await this.#run(`delete "${key}"`, "EVAL", DELETE_SCRIPT, 2, this.#valueKey(key), this.#indexKey(), key)
  }

  async list(prefix: string): Promise<string[]> {
    if (prefix !== "") checkKey(prefix)
    // Lexical range over the index: every key starting "prefix/" ('0' is the byte after '/').
    const range = prefix === "" ? ["-", "+"] : [`[${prefix}/`, `(${prefix}0`]
    const reply = await this.#run(`list "${prefix}"`, "ZRANGEBYLEX", this.#indexKey(), range[0]!, range[1]!)
    return Array.isArray(reply) ? reply.filter(Buffer.isBuffer).map((b) => b.toString()) : []
  }

  async lock(name: string, ttlMs: number, signal?: AbortSignal): Promise<() => Promise<void>> {
    checkKey(name)
    if (!(ttlMs >= 100)) throw new PortcullisError("PC_STORE_LOCK_TTL", `lock "${name}": ttlMs must be at least 100`)
    const key = `${this.#prefix}lock:${name}`
    const token = randomBytes(16).toString("hex")
    const poll = Math.min(this.#pollMs, ttlMs / 2)
    for (let attempt = 0; ; attempt++) {
      signal?.throwIfAborted()
      try {
        if ((await this.#client.command("SET", key, token, "NX", "PX", ttlMs)) !== null) break
      } catch (err) {
        // Redis down or slow: keep waiting; the lock cannot be proven free, and the caller decides how long via signal.
        if (attempt === 0) this.#log.debug({ lock: name, err: errorMessage(err) }, "lock: the store does not answer")
      }
      await sleep(poll * (0.5 + Math.random()), signal)
    }
    return this.#held(name, key, token, ttlMs)
  }

  /** #held renews the lock every ttlMs / 3 until released; the release function deletes it if still ours. */
  #held(name: string, key: string, token: string, ttlMs: number): () => Promise<void> {
    let released = false
    const renew = setInterval(async () => {
      try {
        if ((await this.#client.command("EVAL", RENEW_SCRIPT, 1, key, token, ttlMs)) === 0 && !released) {
          released = true
          clearInterval(renew)
          this.#log.warn({ lock: name }, "lock lost: it expired before it was renewed (the store was unreachable)")
        }
      } catch (err) {
        this.#log.debug({ lock: name, err: errorMessage(err) }, "lock renewal failed; retrying")
      }
    }, ttlMs / 3)
    renew.unref()
    return async () => {
      if (released) return
      released = true
      clearInterval(renew)
      try {
        await this.#client.command("EVAL", RELEASE_SCRIPT, 1, key, token)
      } catch (err) {
        // Not deleted now, it expires after ttlMs: nobody else can take it sooner, but nobody waits forever.
        this.#log.warn({ lock: name, err: errorMessage(err) }, "lock release failed; it expires on its own")
      }
    }
  }

  async #run(what: string, name: string, ...args: (string | Buffer | number)[]): Promise<Reply> {
    try {
      return await this.#client.command(name, ...args)
    } catch (err) {
      throw new PortcullisError(
        "PC_STORE_UNAVAILABLE",
        `certificate storage: cannot ${what}: the fleet store did not answer (${errorMessage(err)})`,
        { cause: err },
      )
    }
  }

  #valueKey(key: string): string {
    return `${this.#prefix}v:${key}`
  }

  #indexKey(): string {
    return `${this.#prefix}index`
  }
}

/** checkKey refuses what the interface forbids: absolute keys, empty segments, `.` and `..`. */
function checkKey(key: string): void {
  const segments = key.split("/")
  if (key === "" || segments.some((s) => s === "" || s === "." || s === "..") || key.includes("\0")) {
    throw new PortcullisError("PC_STORE_BAD_KEY", `storage key "${key}" is not a relative path`)
  }
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort)
      resolve()
    }, ms)
    const onAbort = () => {
      clearTimeout(timer)
      reject(signal!.reason)
    }
    signal?.addEventListener("abort", onAbort, { once: true })
  })
}
