/**
 * @module ticket-rotation: the session-ticket key schedule: what each listener's `session_tickets` asks for, the
 * one schedule the runtime's ring follows, and the timer that rotates it (RFC 8446 §4.6.1, RFC 5077 §5.5).
 */
import type { ListenerTlsConfig } from "../config/schema.ts"
import { errorMessage } from "../core/errors.ts"
import type { Logger } from "../core/log.ts"
import { isScheduled, type TicketKeyRing } from "./ticket-keys.ts"

/** RFC 8446 §4.6.1: a ticket lifetime is at most 7 days. */
const MAX_LIFETIME_S = 7 * 24 * 3600
/** How soon a due rotation that did not happen (a shared store down, another instance's lock) is tried again. */
const RETRY_MS = 30_000

/** ListenerTickets is one listener's ticket settings, from its `session_tickets`. */
export interface ListenerTickets {
  enabled: boolean
  /** How long a previous key's tickets still open here (keep × rotate); undefined: as long as the ring holds it. */
  graceMs?: number
  /** The ticket lifetime hint and server-side session timeout, in seconds; undefined: OpenSSL's default. */
  lifetimeS?: number
  schedule?: { rotateMs: number; keep: number }
}

/**
 * listenerTickets reads `session_tickets`. With a schedule, a ticket is promised no longer than the ring is sure to
 * honour it: a ticket sealed just before a rotation opens for keep more periods, so the hint is keep × rotate
 * (one period with keep 0, the most such a ticket can live).
 */
export function listenerTickets(config: Pick<ListenerTlsConfig, "session_tickets">): ListenerTickets {
  const setting = config.session_tickets
  if (setting === false) return { enabled: false }
  if (setting === true) return { enabled: true }
  const graceMs = setting.rotate * setting.keep
  const lifetimeS = Math.min(MAX_LIFETIME_S, Math.max(1, Math.floor((graceMs || setting.rotate) / 1000)))
  return { enabled: true, graceMs, lifetimeS, schedule: { rotateMs: setting.rotate, keep: setting.keep } }
}

/** RingSchedule is what the runtime's one ring follows: the shortest period asked for, keys held for the longest. */
export interface RingSchedule {
  rotateMs: number
  /** previous keys the ring holds */
  keep: number
  /** how long it holds one after it stopped being current */
  graceMs: number
}

/**
 * ringSchedule merges the listeners' schedules into the ring's: one ring for the runtime (the fleet's ring is one
 * Redis key and a worker's ring one IPC feed), each listener deriving its own keys from it. It rotates as often as
 * the most demanding listener asks and holds keys as long as the most patient one honours them; each listener
 * still opens a previous key's tickets only for its own keep × rotate (tls/ticket-callback.ts). undefined: no
 * listener asked for a schedule, the ring is not rotated on a timer (as before `session_tickets` took one).
 */
export function ringSchedule(configs: readonly Pick<ListenerTlsConfig, "session_tickets">[]): RingSchedule | undefined {
  const asked = configs.map((c) => listenerTickets(c).schedule).filter((s) => s !== undefined)
  if (asked.length === 0) return undefined
  const rotateMs = Math.min(...asked.map((s) => s.rotateMs))
  const graceMs = Math.max(...asked.map((s) => s.rotateMs * s.keep))
  return { rotateMs, keep: Math.ceil(graceMs / rotateMs), graceMs }
}

/**
 * TicketRotation rotates the ring when its current key is rotateMs old. The timer is armed from the current key's
 * createdAt (so a shared ring's instances agree on when) and armed again on every change of the ring; it is
 * unref'd and never on a handshake's path. Rings that do not take part in scheduling are left alone.
 */
export class TicketRotation {
  readonly #ring: TicketKeyRing
  readonly #log: Logger
  readonly #now: () => number
  readonly #unwatch: () => void
  #schedule: RingSchedule | undefined
  #timer: NodeJS.Timeout | undefined
  #closed = false

  constructor(ring: TicketKeyRing, log: Logger, now: () => number = Date.now) {
    this.#ring = ring
    this.#log = log
    this.#now = now
    this.#unwatch = ring.onChange(() => this.#arm(0))
  }

  /** apply takes the schedule of the config now serving (undefined: stop rotating). */
  apply(schedule: RingSchedule | undefined): void {
    const ring = this.#ring
    if (!isScheduled(ring)) return
    const same =
      schedule?.rotateMs === this.#schedule?.rotateMs &&
      schedule?.keep === this.#schedule?.keep &&
      schedule?.graceMs === this.#schedule?.graceMs
    this.#schedule = schedule
    if (schedule && !same) ring.retain(schedule.keep, schedule.graceMs)
    this.#arm(0)
  }

  close(): void {
    this.#closed = true
    clearTimeout(this.#timer)
    this.#unwatch()
  }

  #arm(minDelayMs: number): void {
    clearTimeout(this.#timer)
    this.#timer = undefined
    const schedule = this.#schedule
    if (!schedule || this.#closed || !isScheduled(this.#ring)) return
    const due = this.#ring.current().createdAt + schedule.rotateMs - this.#now()
    // setTimeout takes at most 2^31-1 ms; a longer wait is armed again when it fires.
    const delay = Math.min(Math.max(due, minDelayMs, 0), 2 ** 31 - 1)
    this.#timer = setTimeout(() => void this.#fire(schedule), delay)
    this.#timer.unref()
  }

  async #fire(schedule: RingSchedule): Promise<void> {
    const ring = this.#ring
    if (!isScheduled(ring)) return
    let rotated = false
    try {
      rotated = await ring.rotateIfDue(schedule.rotateMs)
      if (rotated) this.#log.info({ ticket_key: ring.current().name }, "session ticket key rotated")
    } catch (err) {
      this.#log.warn({ err: errorMessage(err) }, "session ticket key rotation failed; the current key stays")
    }
    // A rotation re-armed through onChange; otherwise try again later (not at once: the key may still be due).
    if (!rotated && this.#schedule === schedule) this.#arm(Math.min(RETRY_MS, schedule.rotateMs))
  }
}
