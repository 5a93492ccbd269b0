/**
 * @module redis-ticket-ring: the session-ticket key ring shared by a fleet through Redis, so a ticket one instance
 * issued resumes on every other (RFC 5077 §4, RFC 8446 §4.6.1: any server holding the key can open the ticket).
 */
import { randomBytes } from "node:crypto"
import { errorMessage } from "../../core/errors.ts"
import type { Logger } from "../../core/log.ts"
import { Secret } from "../../core/secret.ts"
import {
  type ScheduledTicketKeyRing,
  TICKET_KEY_BYTES,
  type TicketKey,
  type TicketKeyRing,
} from "../../state/ticket-keys.ts"
import type { RedisClient } from "./redis-client.ts"

/** The Redis key holding the ring, and the channel a rotation is announced on (with the writer's instance id). */
export const RING_KEY = "portcullis:ticket_keys"
export const RING_CHANNEL = "portcullis:ticket_keys:changed"
/** Prefix of the lock (SET NX PX, suffixed with the current key's name) taken to make a scheduled rotation. */
export const ROTATION_LOCK = "portcullis:ticket_keys:rotating"

interface StoredKey {
  /** base64 of the 48 bytes */
  m: string
  createdAt: number
}

/** RedisTicketKeyRingOptions: the command and subscriber connections, and how many previous keys are kept. */
export interface RedisTicketKeyRingOptions {
  client: RedisClient
  subscriber: RedisClient
  log: Logger
  /** Previous keys kept after a rotation (default 2). */
  keep?: number
  /** How often the ring is read again to catch a missed announcement, in ms (default 5000). */
  pollMs?: number
}

/**
 * RedisTicketKeyRing holds the same 48-byte keys the memory ring holds, but their source of truth is one Redis
 * key: the first instance to start creates it (SET NX) and every other one loads it. rotate() makes the new key
 * here, serves it at once, writes the whole ring and announces it; every instance re-reads the key on an
 * announcement and every pollMs. Two rotations at once: the last SET wins and every instance, the losers
 * included, converges on it at the next read. While Redis is down the instance keeps its keys; a rotation made
 * then is written when Redis returns (it wins over what Redis holds), otherwise Redis's ring is adopted.
 * Key material is never logged; only key names (the first 16 bytes, which every ticket carries in clear) are.
 * Scheduled rotation (rotateIfDue) is coordinated here: an instance reads the ring first, and rotates only if the
 * fleet's current key is still due and it wins ROTATION_LOCK; the others adopt the new key from the announcement.
 * While Redis is down no scheduled rotation is made (the fleet keeps one key rather than each instance its own).
 */
export class RedisTicketKeyRing implements ScheduledTicketKeyRing {
  readonly #client: RedisClient
  readonly #subscriber: RedisClient
  readonly #log: Logger
  #keep: number
  readonly #listeners = new Set<(ring: TicketKeyRing) => void>()
  #keys: TicketKey[]
  /** A rotation made while Redis could not take it: written on the next sync. */
  #unwritten = false
  #poll: NodeJS.Timeout | undefined
  #syncing: Promise<void> | undefined

  constructor(options: RedisTicketKeyRingOptions) {
    this.#client = options.client
    this.#subscriber = options.subscriber
    this.#log = options.log
    this.#keep = options.keep ?? 2
    this.#keys = [makeKey(randomBytes(TICKET_KEY_BYTES), Date.now())]
    this.#subscriber.subscribe(RING_CHANNEL)
    this.#subscriber.on("message", (channel: string) => {
      if (channel === RING_CHANNEL) void this.sync()
    })
    this.#client.on("ready", () => void this.sync())
    this.#poll = setInterval(() => void this.sync(), options.pollMs ?? 5000)
    this.#poll.unref()
  }

  current(): TicketKey {
    return this.#keys[0]!
  }

  keys(): readonly TicketKey[] {
    return this.#keys
  }

  rotate(): TicketKey {
    this.#keys = [makeKey(randomBytes(TICKET_KEY_BYTES), Date.now()), ...this.#keys].slice(0, this.#keep + 1)
    this.#unwritten = true
    this.#notify()
    void this.#write()
    return this.current()
  }

  retain(keep: number): void {
    // Only the count: the fleet's keys age out by rotation (every instance reads the same list).
    this.#keep = keep
  }

  async rotateIfDue(maxAgeMs: number): Promise<boolean> {
    if (!this.#client.ready) return false
    // A read of our own (not a sync already in flight, which may predate another instance's rotation).
    await this.#sync()
    const current = this.current()
    if (Date.now() - current.createdAt < maxAgeMs) return false
    try {
      // One lock per key being replaced: of the instances that saw this key due, one rotates it away, however late
      // the others read. It expires (one period, at most 10 min) in case its holder died before writing.
      const lockMs = Math.min(Math.max(maxAgeMs, 1000), 600_000)
      const won = await this.#client.command("SET", `${ROTATION_LOCK}:${current.name}`, "1", "NX", "PX", lockMs)
      if (won === null || this.current() !== current) return false
    } catch (err) {
      this.#log.debug({ err: errorMessage(err) }, "ticket key rotation lock failed; not rotating now")
      return false
    }
    this.rotate()
    return true
  }

  onChange(listener: (ring: TicketKeyRing) => void): () => void {
    this.#listeners.add(listener)
    return () => this.#listeners.delete(listener)
  }

  /**
   * sync reads the ring from Redis and adopts it, or creates it there (SET NX) when there is none, or writes a
   * rotation Redis missed. Failures are left to the store's connection log; the next ready/poll retries.
   */
  sync(): Promise<void> {
    this.#syncing ??= this.#sync().finally(() => {
      this.#syncing = undefined
    })
    return this.#syncing
  }

  async #sync(): Promise<void> {
    if (!this.#client.ready) return
    try {
      if (this.#unwritten) return await this.#write()
      const held = this.#keys
      let stored = await this.#client.command("GET", RING_KEY)
      if (stored === null) {
        await this.#client.command("SET", RING_KEY, serialise(this.#keys), "NX")
        stored = await this.#client.command("GET", RING_KEY)
      }
      if (!Buffer.isBuffer(stored)) return
      const keys = deserialise(stored)
      if (keys.length === 0 || sameKeys(keys, this.#keys)) return
      // Rotated here while the read was on its way: what Redis held then is older than our keys (the write wins).
      if (this.#keys !== held || this.#unwritten) return
      this.#keys = keys
      this.#log.info({ ticket_key: keys[0]!.name }, "session ticket keys loaded from the fleet store")
      this.#notify()
    } catch (err) {
      this.#log.debug({ err: errorMessage(err) }, "ticket key sync failed; keeping the current keys")
    }
  }

  async #write(): Promise<void> {
    if (!this.#client.ready) return
    try {
      const keys = this.#keys
      await this.#client.command("SET", RING_KEY, serialise(keys))
      if (this.#keys === keys) this.#unwritten = false
      await this.#client.command("PUBLISH", RING_CHANNEL, keys[0]!.name)
      this.#log.info({ ticket_key: keys[0]!.name }, "session ticket keys rotated for the fleet")
    } catch (err) {
      this.#log.debug({ err: errorMessage(err) }, "writing the ticket keys failed; retried when the store returns")
    }
  }

  #notify(): void {
    for (const listener of this.#listeners) listener(this)
  }

  close(): void {
    clearInterval(this.#poll)
  }
}

function makeKey(material: Buffer, createdAt: number): TicketKey {
  return { name: material.subarray(0, 16).toString("hex"), material: new Secret(material), createdAt }
}

function serialise(keys: readonly TicketKey[]): string {
  const stored: StoredKey[] = keys.map((k) => ({ m: k.material.reveal().toString("base64"), createdAt: k.createdAt }))
  return JSON.stringify({ keys: stored })
}

/** deserialise reads what serialise wrote; anything malformed gives no keys (and the instance keeps its own). */
function deserialise(value: Buffer): TicketKey[] {
  try {
    const parsed = JSON.parse(value.toString()) as { keys?: StoredKey[] }
    const out: TicketKey[] = []
    for (const k of parsed.keys ?? []) {
      const material = Buffer.from(String(k.m), "base64")
      if (material.length !== TICKET_KEY_BYTES) return []
      out.push(makeKey(material, Number(k.createdAt) || 0))
    }
    return out
  } catch {
    return []
  }
}

function sameKeys(a: readonly TicketKey[], b: readonly TicketKey[]): boolean {
  return a.length === b.length && a.every((k, i) => k.name === b[i]!.name)
}
