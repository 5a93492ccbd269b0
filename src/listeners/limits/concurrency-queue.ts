/** @module concurrency-queue: a slot limit with a bounded, timed wait queue, for a backend's max_connections. */
import { BackendError } from "../../core/errors.ts"

/** Release gives a slot back; calling it more than once is harmless. */
export type Release = () => void

/** BoundedQueueOptions: how many may hold a slot, how many may wait, and for how long by default. */
export interface BoundedQueueOptions {
  /** Slots: requests (or connections) allowed at once, e.g. the backend's max_connections. */
  limit: number
  /** Waiters allowed beyond the slots; 0 = refuse at once when full. */
  queueSize: number
  /** Default wait in ms before acquire() rejects with PC_BACKEND_QUEUE_TIMEOUT. */
  timeout: number
  /** Named in error messages, e.g. the backend id. */
  name?: string
}

interface Waiter {
  resolve: (release: Release) => void
  reject: (err: unknown) => void
  timer: NodeJS.Timeout
  signal: AbortSignal | undefined
  onAbort: (() => void) | undefined
}

/**
 * BoundedQueue hands out at most `limit` slots. Past that, callers wait in FIFO order, at most `queueSize` of them,
 * each for at most its timeout. A released slot goes straight to the oldest waiter, so a waiter cannot be overtaken
 * by a newcomer. Rejections are BackendErrors: PC_BACKEND_QUEUE_FULL (answer 503 at once) and
 * PC_BACKEND_QUEUE_TIMEOUT (503 after waiting).
 */
export class BoundedQueue {
  readonly limit: number
  readonly queueSize: number
  readonly timeout: number
  readonly name: string
  #active = 0
  /** Waiters in arrival order; a Set so a timed-out or aborted waiter leaves in O(1). */
  readonly #waiters = new Set<Waiter>()
  #destroyed: unknown

  constructor(options: BoundedQueueOptions) {
    this.limit = options.limit
    this.queueSize = options.queueSize
    this.timeout = options.timeout
    this.name = options.name ?? "backend"
  }

  /** active is the number of slots held now. */
  get active(): number {
    return this.#active
  }

  /** waiting is the number of callers queued now. */
  get waiting(): number {
    return this.#waiters.size
  }

  /** tryAcquire takes a free slot without waiting (and without a promise), or returns undefined. */
  tryAcquire(): Release | undefined {
    if (this.#destroyed !== undefined || this.#active >= this.limit || this.#waiters.size > 0) return undefined
    this.#active++
    return this.#releaser()
  }

  /**
   * acquire resolves with a Release once a slot is free. It rejects with PC_BACKEND_QUEUE_FULL when queueSize callers
   * already wait, PC_BACKEND_QUEUE_TIMEOUT after timeoutMs, or the signal's reason if it aborts first (the client
   * went away). The caller must call the Release exactly when its request or connection ends.
   */
  acquire(timeoutMs = this.timeout, signal?: AbortSignal): Promise<Release> {
    if (this.#destroyed !== undefined) return Promise.reject(this.#destroyed)
    if (signal?.aborted) return Promise.reject(signal.reason)
    const now = this.tryAcquire()
    if (now !== undefined) return Promise.resolve(now)
    if (this.#waiters.size >= this.queueSize) {
      return Promise.reject(
        new BackendError(
          "PC_BACKEND_QUEUE_FULL",
          `waiting for a connection slot on ${this.name}: queue full (${this.limit} in use, ${this.queueSize} waiting)`,
        ),
      )
    }
    return new Promise<Release>((resolve, reject) => {
      const waiter: Waiter = {
        resolve,
        reject,
        signal,
        onAbort: undefined,
        timer: setTimeout(() => {
          this.#leave(waiter)
          reject(
            new BackendError(
              "PC_BACKEND_QUEUE_TIMEOUT",
              `waiting for a connection slot on ${this.name}: timed out after ${timeoutMs} ms`,
            ),
          )
        }, timeoutMs),
      }
      if (signal !== undefined) {
        waiter.onAbort = () => {
          this.#leave(waiter)
          reject(signal.reason)
        }
        signal.addEventListener("abort", waiter.onAbort, { once: true })
      }
      this.#waiters.add(waiter)
    })
  }

  /** destroy rejects every waiter with err and refuses new callers; slots already held may still be released. */
  destroy(err: unknown = new BackendError("PC_BACKEND_QUEUE_CLOSED", `queue of ${this.name} closed`)): void {
    this.#destroyed = err
    for (const waiter of [...this.#waiters]) {
      this.#leave(waiter)
      waiter.reject(err)
    }
  }

  #releaser(): Release {
    let released = false
    return () => {
      if (released) return
      released = true
      this.#handOver()
    }
  }

  /** #handOver passes a freed slot to the oldest waiter, or frees it. */
  #handOver(): void {
    for (const waiter of this.#waiters) {
      this.#leave(waiter)
      waiter.resolve(this.#releaser())
      return
    }
    this.#active--
  }

  #leave(waiter: Waiter): void {
    this.#waiters.delete(waiter)
    clearTimeout(waiter.timer)
    if (waiter.onAbort !== undefined) waiter.signal?.removeEventListener("abort", waiter.onAbort)
  }
}
