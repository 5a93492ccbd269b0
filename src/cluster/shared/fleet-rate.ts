/**
 * @module fleet-rate: fleet-wide per-client request rates (`limits.rate.scope: fleet`). The local token bucket
 * stays the decision; counts are reconciled with Redis in the background, so no request waits on Redis.
 */
import { ClientLimiter, type ClientLimiterOptions } from "../../listeners/limits/client-limiter.ts"
import type { RedisClient } from "./redis-client.ts"

/** RateSpender is what counts others accepted are spent from: a limiter, or a primary's fan-out to its workers. */
export interface RateSpender {
  spend(ip: string, n: number): void
}

/**
 * RateShare is where a SharedClientLimiter counts the requests it accepted and hears what others accepted:
 * FleetRateSync (one process and Redis) or a cluster worker's relay to its primary (cluster/worker-rates.ts).
 * record is on the hot path: a Map update, never I/O.
 */
export interface RateShare {
  attach(spender: RateSpender): void
  record(ip: string): void
  close(): void
}

/** Most clients one flush reconciles (the most recently active win); the rest stay local until the next one. */
const MAX_CLIENTS_PER_FLUSH = 5000

interface Window {
  w: number
  /** what this instance added to the window's key */
  mine: number
  /** the other instances' part of the key as last read */
  seen: number
}

interface Tracked {
  current: Window
  previous: Window | undefined
}

/**
 * FleetRateSync: the approximation. Time is cut into windows of windowMs on the wall clock (instances' clocks
 * are assumed within a window of each other). Every windowMs each instance INCRBYs, for each client it served,
 * `portcullis:rate:<scope>:<client>:<window>` by the requests it accepted since the last flush; the answer is the
 * fleet's total for that window, and the part that is not ours is spent from our local bucket (drain). The
 * previous window's key is read once more after it closed, to take the other instances' last flush. So a client
 * spread over N instances gets about rate × time + N × burst in total, plus what the others accepted in the last
 * windowMs before we drained it (at most N × rate × windowMs). Only clients seen here in the last two windows are
 * reconciled. While Redis is down (or a flush fails) counts stay local: the limit errs towards letting requests
 * through, each instance then allowing the whole rate, as with scope local.
 */
export class FleetRateSync implements RateShare {
  readonly #client: RedisClient
  readonly #scope: string
  readonly #windowMs: number
  #limiter: RateSpender | undefined
  #local = new Map<string, number>()
  readonly #tracked = new Map<string, Tracked>()
  #timer: NodeJS.Timeout | undefined
  #flushing = false

  constructor(client: RedisClient, scope: string, windowMs = 250) {
    this.#client = client
    this.#scope = scope
    this.#windowMs = windowMs
  }

  /**
   * attach binds what others' counts are spent from (this process's limiter, or a primary's fan-out to its
   * workers' limiters), and starts the flush timer.
   */
  attach(limiter: RateSpender): void {
    this.#limiter = limiter
    this.#timer ??= setInterval(() => void this.flush(), this.#windowMs)
    this.#timer.unref()
  }

  /** record counts n requests this instance accepted (the hot path: one Map update). */
  record(ip: string, n = 1): void {
    this.#local.set(ip, (this.#local.get(ip) ?? 0) + n)
  }

  async flush(now = Date.now()): Promise<void> {
    if (this.#flushing || !this.#limiter) return
    if (!this.#client.ready) {
      // Down: the counts stay local (each instance allows the whole rate) and are not kept to send later.
      this.#local.clear()
      return
    }
    this.#flushing = true
    const batch = this.#local
    this.#local = new Map()
    const w = Math.floor(now / this.#windowMs)
    try {
      const ips = new Set(batch.keys())
      for (const [ip, t] of this.#tracked) {
        if (t.current.w >= w - 1) ips.add(ip)
        else this.#tracked.delete(ip)
      }
      const work: Promise<void>[] = []
      let n = 0
      for (const ip of ips) {
        if (n++ >= MAX_CLIENTS_PER_FLUSH) break
        work.push(this.#reconcile(ip, w, batch.get(ip) ?? 0))
      }
      await Promise.allSettled(work)
    } finally {
      this.#flushing = false
    }
  }

  async #reconcile(ip: string, w: number, count: number): Promise<void> {
    let t = this.#tracked.get(ip)
    if (!t) {
      t = { current: { w, mine: 0, seen: 0 }, previous: undefined }
      this.#tracked.set(ip, t)
    } else if (t.current.w !== w) {
      t.previous = t.current.w === w - 1 ? t.current : undefined
      t.current = { w, mine: 0, seen: 0 }
    }
    const current = t.current
    const previous = t.previous
    t.previous = undefined
    current.mine += count
    const key = this.#key(ip, w)
    const replies = await Promise.all([
      count > 0 ? this.#client.command("INCRBY", key, count) : this.#client.command("GET", key),
      count > 0 ? this.#client.command("PEXPIRE", key, this.#windowMs * 8) : undefined,
      previous ? this.#client.command("GET", this.#key(ip, previous.w)) : undefined,
    ])
    let spend = 0
    const total = Number(replies[0] ?? 0)
    if (Number.isFinite(total) && total - current.mine > current.seen) {
      spend += total - current.mine - current.seen
      current.seen = total - current.mine
    }
    if (previous) {
      const prevTotal = Number(replies[2] ?? 0)
      if (Number.isFinite(prevTotal) && prevTotal - previous.mine > previous.seen) {
        spend += prevTotal - previous.mine - previous.seen
      }
    }
    if (spend > 0) this.#limiter?.spend(ip, spend)
  }

  #key(ip: string, w: number): string {
    return `portcullis:rate:${this.#scope}:${ip}:${w}`
  }

  close(): void {
    clearInterval(this.#timer)
    this.#timer = undefined
  }
}

/** Most clients that may owe tokens at once; past it the debts are forgotten (erring towards letting through). */
const MAX_DEBTORS = 100_000

/**
 * FleetClientLimiter is a ClientLimiter whose accepted requests are counted in a RateShare (the fleet's, or a
 * cluster's process group's). What other processes accepted from a client becomes that client's debt here, paid
 * from its bucket before its next request is decided: a busy client's bucket rarely holds a whole token when the
 * counts arrive, so the debt waits for one. A debt is capped at one burst (at most a burst's worth of refill time
 * is owed).
 */
export class FleetClientLimiter extends ClientLimiter implements RateSpender {
  readonly #sync: RateShare
  readonly #debts = new Map<string, number>()
  #cap: number

  constructor(options: ClientLimiterOptions, sync: RateShare) {
    super(options)
    this.#sync = sync
    this.#cap = options.rate?.burst ?? 0
    sync.attach(this)
  }

  override configure(options: Pick<ClientLimiterOptions, "maxConnections" | "rate">): void {
    super.configure(options)
    this.#cap = options.rate?.burst ?? 0
  }

  override takeRequest(ip: string, now = Date.now()): boolean {
    if (this.#debts.size > 0) this.#pay(ip, now)
    if (!super.takeRequest(ip, now)) return false
    // No rate (connections only): nothing to count.
    if (this.#cap > 0) this.#sync.record(ip)
    return true
  }

  /** spend records n requests other instances accepted from the client, and pays what its bucket holds now. */
  spend(ip: string, n: number, now = Date.now()): void {
    if (this.#cap === 0) return
    if (this.#debts.size >= MAX_DEBTORS) this.#debts.clear()
    this.#debts.set(ip, Math.min(this.#cap, (this.#debts.get(ip) ?? 0) + n))
    this.#pay(ip, now)
  }

  /** #pay spends whole tokens from the client's bucket against its debt (never refusing anything by itself). */
  #pay(ip: string, now: number): void {
    let debt = this.#debts.get(ip)
    if (debt === undefined) return
    while (debt > 0 && this.retryAfterSeconds(ip, now) === 0) {
      super.takeRequest(ip, now)
      debt--
    }
    if (debt > 0) this.#debts.set(ip, debt)
    else this.#debts.delete(ip)
  }

  override close(): void {
    this.#sync.close()
    this.#debts.clear()
    super.close()
  }
}
