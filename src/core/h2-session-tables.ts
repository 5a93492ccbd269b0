/**
 * @module h2-session-tables: gives a node:http2 session (server or client) stream tables that do not keep dead
 * streams alive across young-generation GCs (id-table.ts says why a Map does).
 *
 * Node internal relied on (Node 24, lib/internal/http2/core.js): the session's `Symbol(state)` object holds
 * `streams` (a SafeMap, id -> Http2Stream) and `pendingStreams` (a SafeSet of streams without an id yet: every new
 * stream passes through it, a server's too). core.js calls only get/set/delete/size/forEach on the first and
 * add/delete/size/forEach on the second, as methods of the object, so tables with those methods stand in for them.
 * If the shape is not found (another Node), the session keeps its own tables and adopt returns false: the
 * session works as before, only slower under many streams; test/core/h2-session-tables.test.ts fails then.
 */
import type { Http2Session } from "node:http2"
import { IdTable } from "./id-table.ts"

/** PendingStreams: the few streams waiting for their id (usually none: a stream gets its id as it is made). */
class PendingStreams<T> {
  readonly #items: (T | undefined)[] = []
  #size = 0

  get size(): number {
    return this.#size
  }

  add(item: T): this {
    if (this.has(item)) return this
    if (this.#size === this.#items.length) this.#items.push(item)
    else this.#items[this.#size] = item
    this.#size++
    return this
  }

  has(item: T): boolean {
    const i = this.#items.indexOf(item)
    return i >= 0 && i < this.#size
  }

  delete(item: T): boolean {
    const i = this.#items.indexOf(item)
    if (i < 0 || i >= this.#size) return false
    const last = this.#size - 1
    this.#items[i] = this.#items[last]
    this.#items[last] = undefined
    this.#size = last
    return true
  }

  /** forEach walks a copy: fn may delete (a closing session cancels its pending streams). */
  forEach(fn: (item: T, same: T, set: this) => void): void {
    if (this.#size === 0) return
    const items = this.#items.slice(0, this.#size) as T[]
    for (const item of items) fn(item, item, this)
  }
}

interface SessionState {
  streams: {
    size: number
    get: unknown
    set: unknown
    delete: unknown
    forEach(fn: (v: unknown, k: unknown) => void): void
  }
  pendingStreams: { size: number; add: unknown; delete: unknown; forEach(fn: (v: unknown) => void): void }
}

/** The symbol of node:http2's per-session state, found once on the first session. */
let stateKey: symbol | undefined

function stateOf(session: Http2Session): SessionState | undefined {
  const holder = session as unknown as Record<symbol, unknown>
  if (stateKey === undefined) {
    for (const key of Object.getOwnPropertySymbols(session)) {
      if (key.description === "state" && isState(holder[key])) {
        stateKey = key
        break
      }
    }
    if (stateKey === undefined) return undefined
  }
  const state = holder[stateKey]
  return isState(state) ? state : undefined
}

function isState(value: unknown): value is SessionState {
  if (typeof value !== "object" || value === null) return false
  const { streams, pendingStreams } = value as Partial<SessionState>
  return (
    typeof streams?.get === "function" &&
    typeof streams.set === "function" &&
    typeof streams.delete === "function" &&
    typeof pendingStreams?.add === "function" &&
    typeof pendingStreams.delete === "function"
  )
}

/**
 * adoptSessionTables swaps the session's stream tables for ours, carrying over any stream already in them. Call it
 * as the session is made (the server's 'session' event, right after http2.connect). Returns false, changing nothing,
 * when this Node's session does not have the shape described above.
 */
export function adoptSessionTables(session: Http2Session): boolean {
  const state = stateOf(session)
  if (state === undefined) return false
  if (state.streams instanceof IdTable) return true
  const streams = new IdTable<unknown>()
  state.streams.forEach((stream, id) => {
    streams.set(id as number, stream)
  })
  const pending = new PendingStreams<unknown>()
  state.pendingStreams.forEach((stream) => {
    pending.add(stream)
  })
  state.streams = streams as unknown as SessionState["streams"]
  state.pendingStreams = pending as unknown as SessionState["pendingStreams"]
  return true
}
