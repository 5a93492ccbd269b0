/**
 * @module ipc-ticket-ring: a cluster worker's ticket-key ring, fed by the primary over IPC: the primary owns the
 * ring (memory or the fleet store's) and sends its keys at start and after every change.
 */
import { Secret } from "../core/secret.ts"
import type { TicketKey, TicketKeyRing } from "../state/ticket-keys.ts"

/** WireTicketKey is one ring key as it crosses the IPC channel (the channel is a local socketpair). */
export interface WireTicketKey {
  name: string
  material: Uint8Array
  createdAt: number
}

/** wireKeys turns a ring's keys (current first) into what the primary sends. */
export function wireKeys(ring: TicketKeyRing): WireTicketKey[] {
  return ring.keys().map((k) => ({ name: k.name, material: k.material.reveal(), createdAt: k.createdAt }))
}

/**
 * IpcTicketKeyRing holds the keys the primary sent last. rotate() asks the primary to rotate (its ring is the one
 * that counts) and returns the current key until the new set arrives through set(), which tells every listener.
 */
export class IpcTicketKeyRing implements TicketKeyRing {
  #keys: TicketKey[]
  readonly #listeners = new Set<(ring: TicketKeyRing) => void>()
  readonly #askRotate: () => void

  constructor(keys: readonly WireTicketKey[], askRotate: () => void) {
    this.#keys = keys.map(fromWire)
    if (this.#keys.length === 0) throw new RangeError("ticket key ring: the primary sent no key")
    this.#askRotate = askRotate
  }

  current(): TicketKey {
    return this.#keys[0]!
  }

  keys(): readonly TicketKey[] {
    return this.#keys
  }

  rotate(): TicketKey {
    this.#askRotate()
    return this.current()
  }

  onChange(listener: (ring: TicketKeyRing) => void): () => void {
    this.#listeners.add(listener)
    return () => this.#listeners.delete(listener)
  }

  /** set replaces the keys with the primary's (current first) and tells the listeners. */
  set(keys: readonly WireTicketKey[]): void {
    if (keys.length === 0) return
    this.#keys = keys.map(fromWire)
    for (const listener of this.#listeners) listener(this)
  }
}

/** fromWire turns a key as it crossed a channel back into a ring key (its material copied into a Secret). */
export function fromWire(k: WireTicketKey): TicketKey {
  return { name: k.name, material: new Secret(Buffer.from(k.material)), createdAt: k.createdAt }
}
