/** @module websocket: proxies an HTTP/1.1 Upgrade (WebSocket) handshake, then pipes the two sockets both ways. */
import type { Duplex } from "node:stream"
import type { Dispatcher } from "undici"
import type { ConnectionInfo } from "../../core/connection-info.ts"
import { errorMessage } from "../../core/errors.ts"
import { classify, classifyCode, type Failure } from "../../core/failure.ts"
import type { Backend } from "../../upstreams/backend.ts"
import type { Upstream } from "../../upstreams/upstream.ts"
import { errorResponse, rawResponse } from "../respond-error.ts"
import type { ExchangeContext } from "./exchange.ts"
import type { H1Request } from "./h1/h1-request.ts"
import { buildRequestHeaders } from "./request-headers.ts"
import { UpgradeTries } from "./upgrade-tries.ts"

/**
 * Upgrade is the dispatch handler for one upgrade request. As the exchange's, its callbacks never throw into the
 * backend client: writes to a destroyed client socket are no-ops, and anything else that throws closes both sides.
 */
class Upgrade implements Dispatcher.DispatchHandler {
  readonly ctx: ExchangeContext
  readonly client: Duplex
  readonly head: Buffer
  readonly backend: Backend
  readonly upstream: Upstream
  readonly tries: UpgradeTries
  /** retry starts the handshake again on another backend; false when none is left. */
  readonly retry: () => boolean
  released = false

  constructor(
    ctx: ExchangeContext,
    client: Duplex,
    head: Buffer,
    upstream: Upstream,
    backend: Backend,
    tries: UpgradeTries,
    retry: () => boolean,
  ) {
    this.ctx = ctx
    this.client = client
    this.head = head
    this.upstream = upstream
    this.backend = backend
    this.tries = tries
    this.retry = retry
  }

  onRequestStart(): void {}

  onRequestUpgrade(
    _controller: Dispatcher.DispatchController,
    statusCode: number,
    headers: Record<string, string | string[] | undefined>,
    socket: Duplex,
  ): void {
    try {
      this.#join(statusCode, headers, socket)
    } catch (err) {
      this.#internal(err)
      socket.destroy()
    }
  }

  #join(statusCode: number, headers: Record<string, string | string[] | undefined>, socket: Duplex): void {
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
    try {
      this.#reject(statusCode, `backend answered ${statusCode} to the upgrade\n`)
    } catch (err) {
      this.#internal(err)
    }
  }

  onResponseData(): void {}
  onResponseEnd(): void {}

  onResponseError(_c: Dispatcher.DispatchController, err: Error): void {
    const failure = classify(err)
    try {
      // Nothing of the response reached the client yet (onRequestUpgrade and onResponseStart end the try).
      if (!this.client.destroyed && this.tries.again(this.backend, failure)) {
        this.#release()
        if (this.retry()) return
      }
    } catch (thrown) {
      this.#internal(thrown)
      return
    }
    this.fail(err, failure)
  }

  /** fail answers a failed upgrade through the one mapping (respond-error.ts): 502 for a refused backend, as a GET. */
  fail(err: unknown, failure: Failure = classify(err)): void {
    try {
      const mapped = errorResponse(failure)
      const fields = {
        upstream: this.upstream.name,
        backend: this.backend.id,
        err: errorMessage(err),
        code: failure.code,
      }
      if (failure.source === "client") this.ctx.log.debug(fields, `websocket: ${mapped.reason}`)
      else this.ctx.log.warn(fields, `websocket: ${mapped.reason}`)
      if (mapped.close) {
        this.#release()
        this.client.destroy()
      } else this.#reject(mapped.status, mapped.body)
    } catch (thrown) {
      this.#internal(thrown)
    }
  }

  #reject(status: number, body: string): void {
    this.#release()
    if (this.client.destroyed) return
    this.client.end(rawResponse(status, body))
  }

  /** #internal: a bug of ours in a callback; log it and close the client, throwing nothing. */
  #internal(err: unknown): void {
    try {
      this.#release()
      this.ctx.log.error(
        { upstream: this.upstream.name, err: errorMessage(err) },
        "internal error in a websocket upgrade",
      )
    } catch {}
    this.client.destroy()
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
  req: H1Request,
  client: Duplex,
  head: Buffer,
  info: ConnectionInfo,
  upstream: Upstream,
  host: string | undefined,
): void {
  client.on("error", () => client.destroy())
  const headers = buildRequestHeaders(req.rawHeaders, info, host)
  // undici writes Connection: upgrade and Upgrade itself from opts.upgrade.
  const upgrade = req.header("upgrade") ?? "websocket"
  const tries = new UpgradeTries(upstream)
  const attempt = (): boolean => {
    const backend = tries.next()
    if (!backend) return false
    const handler = new Upgrade(ctx, client, head, upstream, backend, tries, attempt)
    try {
      upstream
        .poolFor(backend)
        .dispatch({ path: req.url ?? "/", method: req.method ?? "GET", headers, upgrade, body: null }, handler, info)
    } catch (err) {
      // A pool that throws instead of calling onResponseError: ours.
      handler.fail(err, classifyCode("PC_INTERNAL"))
    }
    return true
  }
  if (!attempt()) {
    const mapped = errorResponse(classifyCode("PC_NO_BACKEND"))
    client.end(rawResponse(mapped.status, mapped.body))
  }
}
