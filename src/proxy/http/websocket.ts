/** @module websocket: proxies an HTTP/1.1 Upgrade (WebSocket) handshake, then pipes the two sockets both ways. */
import type { IncomingMessage } from "node:http"
import type { Duplex } from "node:stream"
import type { Dispatcher } from "undici"
import type { ConnectionInfo } from "../../core/connection-info.ts"
import { errorCode, errorMessage } from "../../core/errors.ts"
import type { Backend } from "../../upstreams/backend.ts"
import type { Upstream } from "../../upstreams/upstream.ts"
import { errorResponse } from "../respond-error.ts"
import type { ExchangeContext } from "./exchange.ts"
import { buildRequestHeaders } from "./request-headers.ts"

/** Upgrade is the dispatch handler for one upgrade request. */
class Upgrade implements Dispatcher.DispatchHandler {
  readonly ctx: ExchangeContext
  readonly client: Duplex
  readonly head: Buffer
  readonly backend: Backend
  readonly upstream: Upstream
  released = false

  constructor(ctx: ExchangeContext, client: Duplex, head: Buffer, upstream: Upstream, backend: Backend) {
    this.ctx = ctx
    this.client = client
    this.head = head
    this.upstream = upstream
    this.backend = backend
  }

  onRequestStart(): void {}

  onRequestUpgrade(
    _controller: Dispatcher.DispatchController,
    statusCode: number,
    headers: Record<string, string | string[] | undefined>,
    socket: Duplex,
  ): void {
    const client = this.client
    let head = `HTTP/1.1 ${statusCode} Switching Protocols\r\n`
    for (const name in headers) {
      const value = headers[name]
      if (value === undefined) continue
      for (const v of Array.isArray(value) ? value : [value]) head += `${name}: ${v}\r\n`
    }
    client.write(`${head}\r\n`)
    if (this.head.length > 0) socket.write(this.head)
    socket.on("error", () => client.destroy())
    client.on("error", () => socket.destroy())
    socket.on("close", () => {
      this.#release()
      client.destroy()
    })
    client.on("close", () => socket.destroy())
    socket.pipe(client)
    client.pipe(socket)
  }

  onResponseStart(_c: Dispatcher.DispatchController, statusCode: number): void {
    // The backend refused the upgrade with a normal response: tell the client plainly and close.
    this.#reject(statusCode, `backend answered ${statusCode} to the upgrade`)
  }

  onResponseData(): void {}
  onResponseEnd(): void {}

  onResponseError(_c: Dispatcher.DispatchController, err: Error): void {
    const mapped = errorResponse(err)
    this.ctx.log.warn(
      { upstream: this.upstream.name, backend: this.backend.id, err: errorMessage(err), code: errorCode(err) },
      `websocket: ${mapped.reason}`,
    )
    this.#reject(mapped.status, mapped.body.trim())
  }

  #reject(status: number, text: string): void {
    this.#release()
    if (this.client.destroyed) return
    const body = `${text}\n`
    this.client.end(
      `HTTP/1.1 ${status} ${status === 502 ? "Bad Gateway" : "Error"}\r\nconnection: close\r\ncontent-type: text/plain\r\ncontent-length: ${Buffer.byteLength(body)}\r\n\r\n${body}`,
    )
  }

  #release(): void {
    if (!this.released) {
      this.released = true
      this.upstream.release(this.backend)
    }
  }
}

/** proxyUpgrade forwards an Upgrade request to a backend of the upstream and joins the sockets on 101. */
export function proxyUpgrade(
  ctx: ExchangeContext,
  req: IncomingMessage,
  client: Duplex,
  head: Buffer,
  info: ConnectionInfo,
  upstream: Upstream,
  host: string | undefined,
): void {
  client.on("error", () => client.destroy())
  const backend = upstream.pick()
  if (!backend) {
    client.end("HTTP/1.1 503 Service Unavailable\r\nconnection: close\r\ncontent-length: 0\r\n\r\n")
    return
  }
  backend.inFlight++
  const headers = buildRequestHeaders(req.rawHeaders, info, host)
  // undici writes Connection: upgrade and Upgrade itself from opts.upgrade.
  const upgrade = String(req.headers.upgrade ?? "websocket")
  upstream
    .poolFor(backend)
    .dispatch(
      { path: req.url ?? "/", method: req.method ?? "GET", headers, upgrade, body: null },
      new Upgrade(ctx, client, head, upstream, backend),
      info,
    )
}
