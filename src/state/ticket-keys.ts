/**
 * @module ticket-keys: the session-ticket key ring (RFC 5077 §4, RFC 8446 §4.6.1): the key new tickets are sealed
 * with, plus the previous ones for a grace period, owned by the runtime so that sessions survive a reload.
 */
import { hkdfSync, randomBytes } from "node:crypto"
import { Secret } from "../core/secret.ts"

/** TICKET_KEY_BYTES: Node's ticketKeys format: 16-byte key name, 16-byte HMAC secret, 16-byte AES key. */
export const TICKET_KEY_BYTES = 48

/** TicketKey is one 48-byte key; `name` (hex of its first 16 bytes) is what a ticket carries to say which key. */
export interface TicketKey {
  readonly name: string
  readonly material: Secret<Buffer>
  readonly createdAt: number
}

/**
 * TicketKeyRing is what the cert store sees. current() is the key new tickets are sealed with; keys() is current
 * first, then the previous keys still in their grace period, newest first (key i stopped being current when key
 * i-1 was made, so its createdAt is key i's retirement time). rotate() makes a new current key and tells every
 * onChange listener. An implementation may be fed from elsewhere (a primary process, a Redis store): it calls its
 * listeners whenever the set of keys changes.
 *
 * How contexts use it (tls/ticket-callback.ts): every SecureContext seals and opens its tickets through Node's
 * internal ticket-key callback (enableTicketKeyCallback / onticketkeycallback, checked on Node 24.21 and guarded by
 * test/tls/ticket-callback.test.ts), which reads current() when sealing and keys() when opening, in the handshake.
 * So a rotation reaches every running context at once (no reload, no new contexts), a ticket sealed under a
 * previous key still resumes (and is renewed under the current one) until the ring drops the key, and a ticket of
 * a key the ring no longer holds gets a full handshake. Each listener seals with a key derived from the ring key
 * for its name (deriveTicketKey), so a ticket resumes only on the listener that issued it.
 *
 * Before this, each context held one fixed 48-byte `ticketKeys` (Node's TicketCompatibilityCallback discards a
 * ticket whose key name differs): a rotation needed a reload and ended every ticket of the older keys at once.
 */
export interface TicketKeyRing {
  current(): TicketKey
  keys(): readonly TicketKey[]
  rotate(): TicketKey
  /** onChange calls listener after every change of keys; returns the function that unsubscribes it. */
  onChange(listener: (ring: TicketKeyRing) => void): () => void
}

/**
 * ScheduledTicketKeyRing is a ring that takes part in scheduled rotation (state/ticket-rotation.ts): it is told how
 * many previous keys to hold and for how long, and decides itself whether a rotation is due (a fleet store lets
 * one instance rotate for all). A ring fed from elsewhere (a worker's, from its primary) does not implement it and
 * is not rotated by the process that holds it.
 */
export interface ScheduledTicketKeyRing extends TicketKeyRing {
  /** retain sets how many previous keys are held and for how long after they stopped being current. */
  retain(keep: number, graceMs: number): void
  /** rotateIfDue rotates when the current key is at least maxAgeMs old (and, for a shared ring, nobody else did). */
  rotateIfDue(maxAgeMs: number): boolean | Promise<boolean>
}

/** isScheduled says whether a ring takes part in scheduled rotation. */
export function isScheduled(ring: TicketKeyRing): ring is ScheduledTicketKeyRing {
  const r = ring as Partial<ScheduledTicketKeyRing>
  return typeof r.retain === "function" && typeof r.rotateIfDue === "function"
}

/**
 * deriveTicketKey gives one listener its own 48-byte key from a ring key (HKDF-SHA256, RFC 5869, info = scope):
 * a ticket then resumes only on the listener that issued it, as when each listener drew its own random key, and
 * every process that shares the ring derives the same key for the same listener.
 */
export function deriveTicketKey(key: TicketKey, scope: string): Buffer {
  return Buffer.from(hkdfSync("sha256", key.material.reveal(), "portcullis session tickets", scope, TICKET_KEY_BYTES))
}

/** MemoryTicketKeyRingOptions: how many previous keys to keep, for how long, and where keys and time come from. */
export interface MemoryTicketKeyRingOptions {
  /** Previous keys kept after a rotation (default 2). */
  keep?: number
  /** How long a previous key is kept after it stopped being current, in ms (default 12 hours). */
  graceMs?: number
  now?: () => number
  random?: (bytes: number) => Buffer
  /**
   * The keys to start with instead of a new one, current first (a binary upgrade hands its ring to the new
   * process, cluster/takeover.ts): key i stopped being current when key i-1 was made, so the schedule goes on.
   */
  keys?: readonly TicketKey[]
}

interface Held {
  key: TicketKey
  /** When it stopped being current (Infinity while it is). */
  retiredAt: number
}

/** MemoryTicketKeyRing is the in-process ring: random keys, made at start and on rotate(). */
export class MemoryTicketKeyRing implements ScheduledTicketKeyRing {
  #keep: number
  #graceMs: number
  readonly #now: () => number
  readonly #random: (bytes: number) => Buffer
  readonly #listeners = new Set<(ring: TicketKeyRing) => void>()
  /** Newest first; [0] is current. */
  #held: Held[]

  constructor(options: MemoryTicketKeyRingOptions = {}) {
    this.#keep = options.keep ?? 2
    this.#graceMs = options.graceMs ?? 12 * 3_600_000
    this.#now = options.now ?? Date.now
    this.#random = options.random ?? randomBytes
    if (!(this.#keep >= 0) || !(this.#graceMs >= 0)) throw new RangeError("ticket key ring: keep and graceMs >= 0")
    const given = options.keys ?? []
    for (const k of given) {
      if (k.material.reveal().length !== TICKET_KEY_BYTES)
        throw new RangeError(`a ticket key is ${TICKET_KEY_BYTES} bytes`)
    }
    this.#held =
      given.length > 0
        ? given.map((key, i) => ({ key, retiredAt: i === 0 ? Number.POSITIVE_INFINITY : given[i - 1]!.createdAt }))
        : [{ key: this.#make(), retiredAt: Number.POSITIVE_INFINITY }]
    this.#expire()
  }

  current(): TicketKey {
    return this.#held[0]!.key
  }

  keys(): readonly TicketKey[] {
    this.#expire()
    return this.#held.map((h) => h.key)
  }

  rotate(): TicketKey {
    const now = this.#now()
    this.#held[0]!.retiredAt = now
    this.#held.unshift({ key: this.#make(), retiredAt: Number.POSITIVE_INFINITY })
    this.#expire()
    for (const listener of this.#listeners) listener(this)
    return this.current()
  }

  onChange(listener: (ring: TicketKeyRing) => void): () => void {
    this.#listeners.add(listener)
    return () => this.#listeners.delete(listener)
  }

  retain(keep: number, graceMs: number): void {
    if (!(keep >= 0) || !(graceMs >= 0)) throw new RangeError("ticket key ring: keep and graceMs >= 0")
    const before = this.#held.length
    this.#keep = keep
    this.#graceMs = graceMs
    this.#expire()
    if (this.#held.length !== before) for (const listener of this.#listeners) listener(this)
  }

  rotateIfDue(maxAgeMs: number): boolean {
    if (this.#now() - this.current().createdAt < maxAgeMs) return false
    this.rotate()
    return true
  }

  /** expire drops previous keys past `keep` or past their grace period. */
  #expire(): void {
    const now = this.#now()
    this.#held = this.#held.filter((h, i) => i === 0 || (i <= this.#keep && now - h.retiredAt < this.#graceMs))
  }

  #make(): TicketKey {
    const material = this.#random(TICKET_KEY_BYTES)
    if (material.length !== TICKET_KEY_BYTES) throw new RangeError(`a ticket key is ${TICKET_KEY_BYTES} bytes`)
    return { name: material.subarray(0, 16).toString("hex"), material: new Secret(material), createdAt: this.#now() }
  }
}
