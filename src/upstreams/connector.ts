/** @module connector: the pool factory: makes a backend's pool (lean HTTP/1.1, undici, per-client PROXY, HTTP/2). */
import type { TLSSocket } from "node:tls"
import { Client, type Dispatcher, Pool } from "undici"
import type { UpstreamConfig } from "../config/schema.ts"
import { type ConnectionInfo, socketOf } from "../core/connection-info.ts"
import type { Backend } from "./backend.ts"
import { type Dialer, proxyHeader } from "./dial.ts"
import { LeanPool } from "./h1/lean-pool.ts"
import { H2Pool } from "./h2/h2-pool.ts"
import type { BackendPool } from "./pool.ts"

/** The HTTP/1.1 pools offer only http/1.1 on TLS: an HTTP/2 pool will dial with ["h2"]. */
const H1_ALPN = ["http/1.1"]

/**
 * createBackendPool makes the keep-alive connection pool for one backend. Plain backends without
 * `send_proxy_protocol` get the lean HTTP/1.1 client (h1/lean-pool.ts), which hands what it does not do (streamed
 * bodies, upgrades, Expect) to an undici pool made on first need. TLS backends use undici. With
 * `send_proxy_protocol` every backend connection starts with a PROXY header naming one client, so connections are
 * never shared between clients: see ProxiedPool.
 */
export function createBackendPool(backend: Backend, config: UpstreamConfig, dialer: Dialer): BackendPool {
  const host = backend.address.host.includes(":") ? `[${backend.address.host}]` : backend.address.host
  const origin = `${dialer.tls ? "https" : "http"}://${host}:${backend.address.port}`
  const options: Pool.Options = {
    connections: Number.isFinite(backend.maxConnections) ? backend.maxConnections : null,
    pipelining: 1,
    headersTimeout: config.timeouts.response,
    bodyTimeout: config.timeouts.idle,
    keepAliveMaxTimeout: config.timeouts.idle,
    // Without a Keep-Alive hint from the backend undici keeps an idle connection 4 s; never longer than timeouts.idle.
    keepAliveTimeout: Math.min(4_000, config.timeouts.idle),
    // Forwarded requests carry whatever the client sent; the backend enforces its own limits.
    maxHeaderSize: 64 * 1024,
    // The backend's dialer: one SNI rule and one TLS session cache for every pool (and per-client pool) to it.
    connect: dialer.connector({ alpn: H1_ALPN }),
    factory: listenedClient,
  }
  if (config.protocol !== "http1") return createH2Pool(backend, config, dialer)
  const version = config.send_proxy_protocol
  if (!version && !dialer.tls) {
    return new LeanPool({
      dialer,
      connections: backend.maxConnections,
      backend,
      keepalive: config.keepalive,
      connectTimeout: config.timeouts.connect,
      headersTimeout: config.timeouts.response,
      bodyTimeout: config.timeouts.idle,
      keepAliveTimeout: options.keepAliveTimeout!,
      keepAliveMaxTimeout: config.timeouts.idle,
      maxHeaderSize: options.maxHeaderSize!,
      fallback: () => new CappedPool(origin, options, backend, config.keepalive),
    })
  }
  if (!version) return new CappedPool(origin, options, backend, config.keepalive)
  return new ProxiedPool(origin, options, { version, dialer }, backend, config.keepalive)
}

const H2_ALPN = ["h2"]
/** Sessions (connections) per HTTP/2 backend: a few, so that one slow connection does not hold every stream. */
const H2_SESSIONS = 4

/** createH2Pool: HTTP/2 to one backend, over TLS with ALPN h2 (protocol h2) or plain TCP (h2c), through its dialer. */
function createH2Pool(backend: Backend, config: UpstreamConfig, dialer: Dialer): BackendPool {
  const { host, port } = backend.address
  const authority = `${host.includes(":") ? `[${host}]` : host}:${port}`
  return new H2Pool({
    scheme: dialer.tls ? "https" : "http",
    authority,
    sessions: H2_SESSIONS,
    maxStreams: backend.maxConnections,
    headersTimeout: config.timeouts.response,
    bodyTimeout: config.timeouts.idle,
    idleTimeout: config.timeouts.idle,
    connect: (callback) => {
      dialer.dial({ alpn: H2_ALPN }, (err, socket) => {
        if (err || !socket) {
          // Retries and statuses match undici's code for a connect timeout (exchange.ts, respond-error.ts).
          const code = (err as { code?: string } | null)?.code
          if (err && code === "PC_BACKEND_CONNECT_TIMEOUT") Object.assign(err, { code: "UND_ERR_CONNECT_TIMEOUT" })
          callback(err ?? new Error("no socket"))
          return
        }
        const alpn = (socket as TLSSocket).alpnProtocol
        if (dialer.tls && alpn !== "h2") {
          socket.destroy()
          callback(
            Object.assign(new Error(`backend ${authority} did not negotiate HTTP/2 (ALPN ${alpn || "none"})`), {
              code: "PC_BACKEND_NO_H2",
            }),
          )
          return
        }
        callback(null, socket)
      })
    },
  })
}

/**
 * keepAliveOptions applies the upstream's `keepalive` (idle connections kept per backend, like nginx's upstream
 * `keepalive N`): a request sent while more than that many are in flight on the backend (counting itself) asks for
 * `Connection: close`, so its connection is closed after the response instead of joining the idle ones. With
 * keepalive 0 no connection is reused. Under the limit the options pass through untouched (no allocation).
 */
function keepAliveOptions(
  options: Dispatcher.DispatchOptions,
  backend: Backend,
  keepalive: number,
): Dispatcher.DispatchOptions {
  // Never reset: false, which would undo undici's own closes (HEAD, upgrade).
  return backend.inFlight > keepalive ? { ...options, reset: true } : options
}

/** CappedPool is a backend's undici pool that keeps at most `keepalive` connections idle (keepAliveOptions). */
class CappedPool extends Pool implements BackendPool {
  readonly #backend: Backend
  readonly #keepalive: number

  constructor(origin: string, options: Pool.Options, backend: Backend, keepalive: number) {
    super(origin, options)
    this.#backend = backend
    this.#keepalive = keepalive
  }

  override dispatch(options: Dispatcher.DispatchOptions, handler: Dispatcher.DispatchHandler): boolean {
    return super.dispatch(keepAliveOptions(options, this.#backend, this.#keepalive), handler)
  }
}

/** ProxiedPoolOptions: which PROXY version to send and the backend's dialer that writes it. */
interface ProxiedPoolOptions {
  version: "v1" | "v2"
  dialer: Dialer
}

/**
 * ProxiedPool is a backend pool for `send_proxy_protocol`: the PROXY header goes first on each backend connection and
 * names one client, so requests are sent on a pool of their own per client connection (the `client` argument of
 * dispatch), closed when that client connection closes. HTTP/2 streams of one client share its pool. This costs a
 * backend connection per client connection (as haproxy's send-proxy does with http-reuse never) but a backend can
 * never attribute a request to the wrong client. Requests with no client go through the base pool with a LOCAL
 * (v2) or UNKNOWN (v1) header. Every pool dials through the backend's one dialer (the header before the ClientHello).
 */
class ProxiedPool extends CappedPool {
  readonly #origin: string
  readonly #options: Pool.Options
  readonly #proxied: ProxiedPoolOptions
  readonly #byClient = new Map<ConnectionInfo, CappedPool>()
  readonly #backend: Backend
  readonly #keepalive: number

  constructor(origin: string, options: Pool.Options, proxied: ProxiedPoolOptions, backend: Backend, keepalive: number) {
    const connect = proxied.dialer.connector({ alpn: H1_ALPN, header: proxyHeader(proxied.version, undefined) })
    super(origin, { ...options, connect }, backend, keepalive)
    this.#origin = origin
    this.#options = options
    this.#proxied = proxied
    this.#backend = backend
    this.#keepalive = keepalive
  }

  override dispatch(
    options: Dispatcher.DispatchOptions,
    handler: Dispatcher.DispatchHandler,
    client?: ConnectionInfo,
  ): boolean {
    if (!client) return super.dispatch(options, handler)
    let pool = this.#byClient.get(client)
    if (!pool) {
      const socket = socketOf(client)
      const header = proxyHeader(this.#proxied.version, client, socket)
      const connect = this.#proxied.dialer.connector({ alpn: H1_ALPN, header })
      pool = new CappedPool(this.#origin, { ...this.#options, connect }, this.#backend, this.#keepalive)
      this.#byClient.set(client, pool)
      const own = pool
      const forget = () => {
        if (this.#byClient.get(client) === own) this.#byClient.delete(client)
        own.close().catch(ignore)
      }
      if (socket && !socket.destroyed) socket.once("close", forget)
      else queueMicrotask(forget) // no socket to watch: the pool serves this request and closes after it
    }
    return pool.dispatch(options, handler)
  }

  /** clients counts the client connections that have a backend pool of their own now. */
  get clients(): number {
    return this.#byClient.size
  }

  // The overloads mirror Dispatcher's close/destroy (promise or callback); the per-client pools go first.
  // biome-ignore lint/suspicious/noExplicitAny: Dispatcher's overloaded signatures
  override close(...args: any[]): any {
    for (const pool of this.#byClient.values()) pool.close().catch(ignore)
    this.#byClient.clear()
    return Reflect.apply(super.close, this, args)
  }

  // biome-ignore lint/suspicious/noExplicitAny: Dispatcher's overloaded signatures
  override destroy(...args: any[]): any {
    for (const pool of this.#byClient.values()) pool.destroy().catch(ignore)
    this.#byClient.clear()
    return Reflect.apply(super.destroy, this, args)
  }
}

function ignore(): void {}

/**
 * listenedClient is the pools' Client factory. undici emits 'error' on a Client when a handler's onResponseError
 * throws (lib/core/util.js errorRequest); a Pool adds no listener for it, so that would end the process. The exchange
 * and the upgrade handler never throw (see exchange.ts); this is the net under them.
 */
function listenedClient(origin: URL, options: object): Dispatcher {
  const client = new Client(origin, options)
  // Client's typings list only its documented events; 'error' is emitted all the same.
  ;(client as unknown as NodeJS.EventEmitter).on("error", ignore)
  return client
}
