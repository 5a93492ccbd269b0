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
 * TicketKeyRing is what the cert store sees. current() is read when a generation builds its SecureContexts (never
 * in a handshake); keys() is current first, then the previous keys still in their grace period, newest first.
 * rotate() makes a new current key and tells every onChange listener. An implementation may be fed from elsewhere
 * (a primary process, a Redis store): it calls its listeners whenever the set of keys changes.
 *
 * What Node does with a key (read from src/crypto/crypto_context.cc, TicketCompatibilityCallback, and checked in
 * test/tls/ticket-resumption.test.ts): a SecureContext holds exactly one 48-byte key (`ticketKeys`, and
 * `setTicketKeys` replaces it). Tickets are sealed with it, and a ticket whose 16-byte key name differs is
 * discarded (the callback returns 0), so the client gets a full handshake; this holds for TLS 1.2 tickets and
 * TLS 1.3 PSK tickets alike. Hence sessions survive a reload only when the new contexts get the same current key,
 * and the previous keys here cannot be honoured by a context through Node's public API: they are kept for an owner
 * that can, and a rotation ends resumption for tickets of older keys.
 *
 * How a rotation reaches contexts: today, by a reload (each new context takes current()). In place, an onChange
 * listener would call `context.context.setTicketKeys(material)` on every SecureContext of the running stores (what
 * tls.Server#setTicketKeys does), which again drops older tickets at once. Honouring the grace period needs the
 * native `enableTicketKeyCallback()` with an `onticketkeycallback(name, iv, encrypt)` on each context that looks the
 * name up in keys() and answers [1|2, hmac, aes(, name, iv)] (2: decrypt with an old key, then issue a new ticket).
 * Tried on Node 24.21 with TlsListener's direct TLSSocket path, it resumes tickets of a previous key; but Node marks
 * that callback as existing only for its own regression test, and an answer without both 16-byte buffers aborts the
 * process (a CHECK in TicketKeyCallback), so it is not used here.
 */
export interface TicketKeyRing {
  current(): TicketKey
  keys(): readonly TicketKey[]
  rotate(): TicketKey
  /** onChange calls listener after every change of keys; returns the function that unsubscribes it. */
  onChange(listener: (ring: TicketKeyRing) => void): () => void
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
}

interface Held {
  key: TicketKey
  /** When it stopped being current (Infinity while it is). */
  retiredAt: number
}

/** MemoryTicketKeyRing is the in-process ring: random keys, made at start and on rotate(). */
export class MemoryTicketKeyRing implements TicketKeyRing {
  readonly #keep: number
  readonly #graceMs: number
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
    this.#held = [{ key: this.#make(), retiredAt: Number.POSITIVE_INFINITY }]
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
