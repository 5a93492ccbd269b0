/**
 * @module worker-rates: a cluster worker's side of the per-client request rates. Each worker decides with its own
 * token buckets (no request waits on IPC); every window it sends the primary what it accepted per client, and the
 * primary sends back what the other workers (and, with scope fleet, the other instances) accepted, which is spent
 * from its buckets (cluster/primary-rates.ts). So a rate limit holds for the machine, as nginx's limit_req zone
 * (shared memory across workers) and HAProxy's stick tables (shared by threads) do.
 */
import type { ClientLimiter, ClientLimiterOptions } from "../listeners/limits/client-limiter.ts"
import { FleetClientLimiter, type RateShare, type RateSpender } from "./shared/fleet-rate.ts"

/** How often a worker sends its counts (ms): also how stale the other workers' counts are here at most. */
export const RATE_WINDOW_MS = 250
/** Most clients one message carries; the rest go with the next window's. */
const MAX_CLIENTS_PER_MESSAGE = 5000

/** RatesMessage is a worker's counts for one listener since its last message. */
export interface RatesMessage {
  type: "rates"
  listener: string
  /** the listener's scope is fleet: the primary also reconciles these counts with the fleet store */
  fleet: boolean
  counts: [ip: string, n: number][]
}

/** WorkerRates makes the workers' limiters and feeds them what the primary sends. */
export class WorkerRates {
  readonly #send: (msg: RatesMessage) => void
  readonly #windowMs: number
  readonly #shares = new Map<string, WorkerRateShare>()

  constructor(send: (msg: RatesMessage) => void, windowMs = RATE_WINDOW_MS) {
    this.#send = send
    this.#windowMs = windowMs
  }

  /** limiter makes the per-client table of a listener (its counts are shared with the other workers). */
  limiter(listener: string, fleet: boolean, options: ClientLimiterOptions): ClientLimiter {
    const share = new WorkerRateShare(listener, fleet, this.#send, this.#windowMs, () => {
      if (this.#shares.get(listener) === share) this.#shares.delete(listener)
    })
    this.#shares.get(listener)?.close()
    this.#shares.set(listener, share)
    return new FleetClientLimiter(options, share)
  }

  /** spend takes what other processes accepted from the listener's clients out of this worker's buckets. */
  spend(listener: string, spends: readonly [string, number][]): void {
    const share = this.#shares.get(listener)
    if (!share) return
    for (const [ip, n] of spends) share.spend(ip, n)
  }
}

/** WorkerRateShare batches one listener's accepted requests and sends them every window. */
class WorkerRateShare implements RateShare {
  readonly #listener: string
  readonly #fleet: boolean
  readonly #send: (msg: RatesMessage) => void
  readonly #windowMs: number
  readonly #onClose: () => void
  #counts = new Map<string, number>()
  #spender: RateSpender | undefined
  #timer: NodeJS.Timeout | undefined

  constructor(
    listener: string,
    fleet: boolean,
    send: (msg: RatesMessage) => void,
    windowMs: number,
    onClose: () => void,
  ) {
    this.#listener = listener
    this.#fleet = fleet
    this.#send = send
    this.#windowMs = windowMs
    this.#onClose = onClose
  }

  attach(spender: RateSpender): void {
    this.#spender = spender
    this.#timer ??= setInterval(() => this.#flush(), this.#windowMs)
    this.#timer.unref()
  }

  record(ip: string): void {
    this.#counts.set(ip, (this.#counts.get(ip) ?? 0) + 1)
  }

  spend(ip: string, n: number): void {
    this.#spender?.spend(ip, n)
  }

  #flush(): void {
    if (this.#counts.size === 0) return
    let batch: [string, number][]
    if (this.#counts.size <= MAX_CLIENTS_PER_MESSAGE) {
      batch = [...this.#counts]
      this.#counts = new Map()
    } else {
      batch = []
      for (const entry of this.#counts) {
        batch.push(entry)
        this.#counts.delete(entry[0])
        if (batch.length >= MAX_CLIENTS_PER_MESSAGE) break
      }
    }
    this.#send({ type: "rates", listener: this.#listener, fleet: this.#fleet, counts: batch })
  }

  close(): void {
    clearInterval(this.#timer)
    this.#timer = undefined
    this.#spender = undefined
    this.#onClose()
  }
}
