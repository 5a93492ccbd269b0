/**
 * @module primary-rates: the cluster primary's side of the per-client request rates. Every worker sends what it
 * accepted per client each window (cluster/worker-rates.ts); the primary passes each worker what the others
 * accepted, and for a listener with scope fleet adds the machine's total to the fleet store's count
 * (FleetRateSync: one INCRBY per client and window for the whole machine) and passes every worker what the other
 * instances accepted. Nothing here is on a request's path: the workers' buckets decide.
 */

import type { FleetRateSync } from "./shared/fleet-rate.ts"
import type { FleetStore } from "./shared/fleet-store.ts"
import type { RatesMessage } from "./worker-rates.ts"

/** SpendMessage is what the primary sends a worker: requests others accepted, per client of one listener. */
export interface SpendMessage {
  type: "spend"
  listener: string
  spends: [ip: string, n: number][]
}

/** A process the primary relays counts to (a worker): compared by identity, sent to while it lives. */
export interface RatePeer {
  send(msg: SpendMessage): void
}

/** PrimaryRates relays counts between the workers and, for scope fleet, the fleet store. */
export class PrimaryRates {
  readonly #fleet: FleetStore | undefined
  readonly #peers: () => readonly RatePeer[]
  /** FleetRateSync by listener name, made on the first fleet-scoped counts. */
  readonly #syncs = new Map<string, FleetRateSync>()
  /** What each peer is owed, by listener then client, sent on the next turn of the event loop (one message each). */
  readonly #owed = new Map<RatePeer, Map<string, Map<string, number>>>()
  #scheduled = false

  constructor(fleet: FleetStore | undefined, peers: () => readonly RatePeer[]) {
    this.#fleet = fleet
    this.#peers = peers
  }

  /** counts takes one worker's message: the other workers owe it, and the fleet store counts it. */
  counts(from: RatePeer, msg: RatesMessage): void {
    for (const peer of this.#peers()) {
      if (peer === from) continue
      for (const [ip, n] of msg.counts) this.#owe(peer, msg.listener, ip, n)
    }
    const sync = msg.fleet ? this.#sync(msg.listener) : undefined
    if (sync) for (const [ip, n] of msg.counts) sync.record(ip, n)
  }

  #sync(listener: string): FleetRateSync | undefined {
    if (!this.#fleet) return undefined
    let sync = this.#syncs.get(listener)
    if (!sync) {
      sync = this.#fleet.rates(listener)
      // What the other instances accepted is spent from every worker's buckets (each mirrors the machine's count).
      sync.attach({
        spend: (ip, n) => {
          for (const peer of this.#peers()) this.#owe(peer, listener, ip, n)
        },
      })
      this.#syncs.set(listener, sync)
    }
    return sync
  }

  #owe(peer: RatePeer, listener: string, ip: string, n: number): void {
    let byListener = this.#owed.get(peer)
    if (!byListener) {
      byListener = new Map()
      this.#owed.set(peer, byListener)
    }
    let clients = byListener.get(listener)
    if (!clients) {
      clients = new Map()
      byListener.set(listener, clients)
    }
    clients.set(ip, (clients.get(ip) ?? 0) + n)
    if (!this.#scheduled) {
      this.#scheduled = true
      setImmediate(() => this.#deliver())
    }
  }

  #deliver(): void {
    this.#scheduled = false
    const owed = new Map(this.#owed)
    this.#owed.clear()
    for (const [peer, byListener] of owed) {
      for (const [listener, clients] of byListener) peer.send({ type: "spend", listener, spends: [...clients] })
    }
  }

  close(): void {
    for (const sync of this.#syncs.values()) sync.close()
    this.#syncs.clear()
    this.#owed.clear()
  }
}
