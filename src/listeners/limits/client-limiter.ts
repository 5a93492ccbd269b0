/** @module client-limiter: per client IP limits on open connections and on request rate, in bounded memory. */
import { isIPv6 } from "node:net"
import type { ClientGateCounters } from "../../state/instruments.ts"
import { Counter } from "../../state/registry.ts"
import { TokenBucket } from "./token-bucket.ts"

/**
 * clientKey is the key limits count a client address under: an IPv4 address as is (also when written IPv4-mapped,
 * ::ffff:192.0.2.1), an IPv6 address by its /64 prefix, since one host usually holds a whole /64 and could otherwise
 * step around per-address limits (and fill the table) by changing its interface id.
 */
export function clientKey(address: string): string {
  if (!isIPv6(address)) return address
  const lower = address.toLowerCase()
  if (lower.startsWith("::ffff:") && lower.includes(".")) return lower.slice(7)
  const zone = lower.indexOf("%")
  const bare = zone === -1 ? lower : lower.slice(0, zone)
  const [head = "", tail] = bare.split("::")
  const left = head === "" ? [] : head.split(":")
  const right = tail === undefined || tail === "" ? [] : tail.split(":")
  const groups = tail === undefined ? left : [...left, ...Array(8 - left.length - right.length).fill("0"), ...right]
  return `${groups
    .slice(0, 4)
    .map((g) => g.replace(/^0+(?=.)/, ""))
    .join(":")}::/64`
}

/** ClientLimiterOptions is the listener's per-client slice of `limits`. */
export interface ClientLimiterOptions {
  /** Open connections one client IP may hold; 0 = unlimited. */
  maxConnections: number
  /** Requests per second one client IP may make, with a burst allowance; undefined = no rate limit. */
  rate?: { perSecond: number; burst: number } | undefined
  /** Most client IPs tracked at once (default 100,000); the least recently seen idle ones are dropped first. */
  maxClients?: number
  /** A client with no open connection and a full bucket is forgotten after this many ms (default 60,000). */
  idleMs?: number
  /** Where refusals are counted (the runtime's registry, by listener address); default: counted here alone. */
  counters?: ClientGateCounters | undefined
}

interface ClientEntry {
  connections: number
  bucket: TokenBucket | undefined
  lastSeen: number
}

/** ClientLimiterStatus is the admin API's view: how many clients are tracked and how often limits refused. */
export interface ClientLimiterStatus {
  clients: number
  refused_connections: number
  refused_requests: number
}

/** How many of the oldest entries one insert looks at to find one it may evict. */
const EVICT_SCAN = 32

/**
 * ClientLimiter counts open connections and spends request tokens per client key (pass clientKey(remoteAddress)). Entries live in a Map kept in
 * least-recently-seen order (each use moves the entry to the end). Memory stays bounded under a flood of distinct
 * addresses: inserting past `maxClients` evicts the oldest entries without open connections, and sweep() (run every
 * idleMs/2 once start() is called) drops idle ones. Entries holding connections are never evicted, since forgetting
 * them would lose the count; there are at most the listener's max_connections of those.
 * Forgetting an idle client resets its bucket to a full burst, which only errs towards letting it through.
 */
export class ClientLimiter {
  #maxConnections: number
  #rate: { perSecond: number; burst: number } | undefined
  readonly #maxClients: number
  readonly #idleMs: number
  readonly #clients = new Map<string, ClientEntry>()
  #timer: NodeJS.Timeout | undefined
  readonly #counters: ClientGateCounters

  constructor(options: ClientLimiterOptions) {
    this.#maxConnections = options.maxConnections
    this.#rate = options.rate
    this.#maxClients = options.maxClients ?? 100_000
    this.#idleMs = options.idleMs ?? 60_000
    this.#counters = options.counters ?? { refusedConnections: new Counter(), refusedRequests: new Counter() }
  }

  /**
   * configure applies a new generation's limits to the same table: open connections stay counted; a client's
   * bucket is kept when the rate is unchanged and otherwise starts full at the new rate.
   */
  configure(options: Pick<ClientLimiterOptions, "maxConnections" | "rate">): void {
    const old = this.#rate
    const next = options.rate
    this.#maxConnections = options.maxConnections
    this.#rate = next
    if (old?.perSecond !== next?.perSecond || old?.burst !== next?.burst) {
      for (const entry of this.#clients.values()) entry.bucket = undefined
    }
    if (!this.enabled && this.#timer !== undefined) {
      clearInterval(this.#timer)
      this.#timer = undefined
    }
    this.start()
  }

  /** enabled is false when neither limit is set: the listener can skip the limiter altogether. */
  get enabled(): boolean {
    return this.#maxConnections > 0 || this.#rate !== undefined
  }

  /** size is the number of client IPs tracked now. */
  get size(): number {
    return this.#clients.size
  }

  /**
   * openConnection counts a new connection from `ip` and returns true, or returns false (counting nothing) when
   * the client already holds maxConnections; then the listener closes the socket. Pair every true with one
   * closeConnection(ip).
   */
  openConnection(ip: string, now = Date.now()): boolean {
    if (!this.enabled) return true
    const entry = this.#entry(ip, now)
    if (this.#maxConnections > 0 && entry.connections >= this.#maxConnections) {
      this.#counters.refusedConnections.inc()
      return false
    }
    entry.connections++
    return true
  }

  /** closeConnection uncounts a connection openConnection accepted. */
  closeConnection(ip: string, now = Date.now()): void {
    const entry = this.#clients.get(ip)
    if (entry === undefined || entry.connections === 0) return
    entry.connections--
    entry.lastSeen = now
  }

  /** takeRequest spends one of the client's request tokens: false means answer 429 with retryAfterSeconds(ip). */
  takeRequest(ip: string, now = Date.now()): boolean {
    if (this.#rate === undefined) return true
    const entry = this.#entry(ip, now)
    entry.bucket ??= new TokenBucket(this.#rate.perSecond, this.#rate.burst, now)
    if (entry.bucket.take(now)) return true
    this.#counters.refusedRequests.inc()
    return false
  }

  /** retryAfterSeconds is the whole seconds until the client has a request token again, for Retry-After. */
  retryAfterSeconds(ip: string, now = Date.now()): number {
    return this.#clients.get(ip)?.bucket?.retryAfterSeconds(now) ?? 0
  }

  /** connections is how many connections the client holds now. */
  connections(ip: string): number {
    return this.#clients.get(ip)?.connections ?? 0
  }

  /** sweep forgets clients idle for idleMs with no open connection and a full bucket; returns how many. */
  sweep(now = Date.now()): number {
    let removed = 0
    for (const [ip, entry] of this.#clients) {
      if (entry.connections === 0 && now - entry.lastSeen >= this.#idleMs && (entry.bucket?.full(now) ?? true)) {
        this.#clients.delete(ip)
        removed++
      }
    }
    return removed
  }

  /** start sweeps every idleMs / 2 on an unref'd timer. */
  start(): void {
    if (this.#timer !== undefined || !this.enabled) return
    this.#timer = setInterval(() => this.sweep(), Math.max(1000, this.#idleMs / 2))
    this.#timer.unref()
  }

  /** close stops the sweep timer and forgets every client. */
  close(): void {
    if (this.#timer !== undefined) clearInterval(this.#timer)
    this.#timer = undefined
    this.#clients.clear()
  }

  status(): ClientLimiterStatus {
    return {
      clients: this.#clients.size,
      refused_connections: this.#counters.refusedConnections.value,
      refused_requests: this.#counters.refusedRequests.value,
    }
  }

  /** #entry finds or makes the client's entry and marks it most recently seen. */
  #entry(ip: string, now: number): ClientEntry {
    let entry = this.#clients.get(ip)
    if (entry !== undefined) {
      // Move to the end: the Map's order is least recently seen first.
      this.#clients.delete(ip)
    } else {
      if (this.#clients.size >= this.#maxClients) this.#evict()
      entry = { connections: 0, bucket: undefined, lastSeen: now }
    }
    entry.lastSeen = now
    this.#clients.set(ip, entry)
    return entry
  }

  /** #evict drops the least recently seen entry without open connections among the oldest few. */
  #evict(): void {
    let scanned = 0
    for (const [ip, entry] of this.#clients) {
      if (scanned++ >= EVICT_SCAN) return
      if (entry.connections === 0) {
        this.#clients.delete(ip)
        return
      }
      // A holder of connections cannot be dropped: rotate it to the back so the front moves on next time.
      this.#clients.delete(ip)
      this.#clients.set(ip, entry)
    }
  }
}
