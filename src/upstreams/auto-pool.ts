/**
 * @module auto-pool: `protocol: auto` on a TLS upstream. The first connection to a backend offers ALPN h2 and
 * http/1.1; what the backend picks decides this backend's pool for the generation (the multiplexed HTTP/2 pool, or
 * the HTTP/1.1 keep-alive pool), as a browser settles the protocol per origin. An HTTP/2 pool takes that first
 * connection as its first session; the HTTP/1.1 pool (undici) opens its own.
 */
import type net from "node:net"
import type { TLSSocket } from "node:tls"
import type { Dispatcher } from "undici"
import type { ConnectionInfo } from "../core/connection-info.ts"
import type { Dialer } from "./dial.ts"
import type { BackendPool } from "./pool.ts"

/** AUTO_ALPN: what the probe offers, HTTP/2 first. */
export const AUTO_ALPN = ["h2", "http/1.1"]

/** AutoPoolOptions: how to make each pool; `first` is the probe's connected socket, for the pool's first connection. */
export interface AutoPoolOptions {
  dialer: Dialer
  h2: (first: net.Socket) => BackendPool
  h1: (first: net.Socket) => BackendPool
}

type Waiting = [Dispatcher.DispatchOptions, Dispatcher.DispatchHandler, ConnectionInfo | undefined]

/** A controller for a request that never started: the probe failed before any pool took it. */
const UNSTARTED: Dispatcher.DispatchController = {
  aborted: false,
  paused: false,
  reason: null,
  abort() {},
  pause() {},
  resume() {},
}

/** AutoPool holds requests while the first connection learns the backend's protocol, then passes everything on. */
export class AutoPool implements BackendPool {
  readonly #options: AutoPoolOptions
  #chosen: BackendPool | undefined
  #probing = false
  #waiting: Waiting[] = []
  #closed = false

  constructor(options: AutoPoolOptions) {
    this.#options = options
  }

  /** protocol: what the backend chose ("h2" or "http/1.1"), once known. */
  protocol: string | undefined

  dispatch(options: Dispatcher.DispatchOptions, handler: Dispatcher.DispatchHandler, info?: ConnectionInfo): boolean {
    if (this.#chosen) return this.#chosen.dispatch(options, handler, info)
    this.#waiting.push([options, handler, info])
    if (!this.#probing) this.#probe()
    return true
  }

  #probe(): void {
    this.#probing = true
    this.#options.dialer.dial({ alpn: AUTO_ALPN }, (err, socket) => {
      this.#probing = false
      const waiting = this.#waiting.splice(0)
      if (err || !socket || this.#closed) {
        socket?.destroy()
        const failure = err ?? Object.assign(new Error("the backend pool is closed"), { code: "UND_ERR_CLOSED" })
        // The same code undici gives a connect timeout, so retries and statuses treat it alike.
        if ((failure as { code?: string }).code === "PC_BACKEND_CONNECT_TIMEOUT") {
          Object.assign(failure, { code: "UND_ERR_CONNECT_TIMEOUT" })
        }
        for (const [, handler] of waiting) handler.onResponseError?.(UNSTARTED, failure)
        return
      }
      const alpn = (socket as TLSSocket).alpnProtocol
      this.protocol = alpn === "h2" ? "h2" : "http/1.1"
      this.#chosen = alpn === "h2" ? this.#options.h2(socket) : this.#options.h1(socket)
      for (const [options, handler, info] of waiting) this.#chosen.dispatch(options, handler, info)
    })
  }

  async close(): Promise<void> {
    this.#closed = true
    await this.#chosen?.close()
  }

  async destroy(): Promise<void> {
    this.#closed = true
    const err = Object.assign(new Error("the backend pool is destroyed"), { code: "UND_ERR_DESTROYED" })
    for (const [, handler] of this.#waiting.splice(0)) handler.onResponseError?.(UNSTARTED, err)
    await this.#chosen?.destroy()
  }
}
