/** @module connector: the pool factory: makes a backend's pool (lean HTTP/1.1, undici, per-client PROXY, HTTP/2). */
import type net from "node:net"
import type { TLSSocket } from "node:tls"
import { type buildConnector, Client, type Dispatcher, Pool } from "undici"
import type { UpstreamConfig } from "../config/schema.ts"
import { type ConnectionInfo, socketOf } from "../core/connection-info.ts"
import { AutoPool } from "./auto-pool.ts"
import type { Backend } from "./backend.ts"
import { type Dialer, proxyHeader } from "./dial.ts"
import { LeanPool, PURGE_INTERVAL_MS, purgeCount } from "./h1/lean-pool.ts"
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
  if (config.protocol === "auto" && dialer.tls) {
    // The backend's ALPN answer to the first connection picks the pool; an HTTP/2 pool takes that connection.
    return new AutoPool({
      dialer,
      h2: (first) => createH2Pool(backend, config, dialer, first),
      h1: (first) => {
        // undici does not adopt a connection it did not open (it stalled on one already through TLS): the probe
        // closes, and the HTTP/1.1 pool opens its own.
        first.destroy()
        return new CappedPool(origin, options, config.keepalive)
      },
    })
  }
  if (config.protocol === "h2" || config.protocol === "h2c") return createH2Pool(backend, config, dialer)
  const version = config.send_proxy_protocol
  if (!version && !dialer.tls) {
    return new LeanPool({
      dialer,
      connections: backend.maxConnections,
      keepalive: config.keepalive,
      connectTimeout: config.timeouts.connect,
      headersTimeout: config.timeouts.response,
      bodyTimeout: config.timeouts.idle,
      keepAliveTimeout: options.keepAliveTimeout!,
      keepAliveMaxTimeout: config.timeouts.idle,
      maxHeaderSize: options.maxHeaderSize!,
      fallback: () => new CappedPool(origin, options, config.keepalive),
    })
  }
  if (!version) return new CappedPool(origin, options, config.keepalive)
  return new ProxiedPool(origin, options, { version, dialer }, config.keepalive)
}

const H2_ALPN = ["h2"]

/** Sessions (connections) per HTTP/2 backend: a few, so that one slow connection does not hold every stream. */
const H2_SESSIONS = 4

/** createH2Pool: HTTP/2 to one backend, over TLS with ALPN h2 (protocol h2) or plain TCP (h2c), through its dialer. */
function createH2Pool(backend: Backend, config: UpstreamConfig, dialer: Dialer, first?: net.Socket): BackendPool {
  let spare = first
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
      if (spare !== undefined) {
        const socket = spare
        spare = undefined
        if (!socket.destroyed) {
          callback(null, socket)
          return
        }
      }
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

/** keepAliveOptions: with `keepalive: 0` every request asks for `Connection: close` (no reuse); else untouched. */
function keepAliveOptions(options: Dispatcher.DispatchOptions, keepalive: number): Dispatcher.DispatchOptions {
  // Never reset: false, which would undo undici's own closes (HEAD, upgrade).
  return keepalive === 0 ? { ...options, reset: true } : options
}

/**
 * CappedPool is a backend's undici pool whose idle connections above `keepalive` are closed gradually, as the lean
 * pool does (h1/lean-pool.ts purge): every PURGE_INTERVAL_MS, while more than `keepalive` connections are open, half
 * of the idle ones above the cap are closed (purgeCount); none is closed because of a response. undici's Pool has no
 * public way to close one idle connection, so the pool makes its Clients (the `factory` option), keeps each one's
 * socket (from its connector), and destroys the socket of a Client with nothing queued or running and nothing written
 * since the previous purge: undici treats that like its own idle timeout (the Client reconnects when next used).
 * undici fills its Clients in list order, so the last ones are the least used: those go first.
 */
class CappedPool extends Pool implements BackendPool {
  readonly #keepalive: number
  readonly #clients: Client[]
  readonly #sockets: WeakMap<Client, net.Socket>
  /** Each socket's bytesWritten at the previous purge. */
  readonly #written = new WeakMap<net.Socket, number>()
  #connected = 0
  #purgeTimer: NodeJS.Timeout | undefined

  constructor(origin: string, options: Pool.Options, keepalive: number) {
    const clients: Client[] = []
    const sockets = new WeakMap<Client, net.Socket>()
    super(origin, {
      ...options,
      factory: (url, opts) => {
        const inner = (opts as Client.Options).connect as buildConnector.connector
        const connect: buildConnector.connector = (connectOptions, callback) =>
          inner(connectOptions, (...result) => {
            if (result[1]) sockets.set(client, result[1])
            callback(...result)
          })
        const client: Client = new Client(url, { ...opts, connect } as Client.Options)
        clients.push(client)
        return client
      },
    })
    this.#keepalive = keepalive
    this.#clients = clients
    this.#sockets = sockets
    if (keepalive > 0) {
      this.on("connect", () => {
        if (++this.#connected > this.#keepalive && this.#purgeTimer === undefined) {
          this.#purgeTimer = setInterval(purgePool, PURGE_INTERVAL_MS, this)
          this.#purgeTimer.unref()
        }
      })
      this.on("disconnect", () => {
        this.#connected--
      })
    }
    // undici drops a Client whose connection failed (and never uses it again): so do we.
    this.on("connectionError", (_origin: URL, targets: readonly Dispatcher[]) => {
      const i = clients.indexOf(targets[1] as Client)
      if (i !== -1) clients.splice(i, 1)
    })
  }

  override dispatch(options: Dispatcher.DispatchOptions, handler: Dispatcher.DispatchHandler): boolean {
    return super.dispatch(keepAliveOptions(options, this.#keepalive), handler)
  }

  /**
   * purge closes part of the idle connections above `keepalive` (purgeCount), least used first, and only those idle
   * through the whole interval: no byte written on the socket since the previous purge (bytesWritten unchanged).
   */
  purge(): void {
    const idle: Client[] = []
    for (const client of this.#clients) {
      const stats = client.stats
      if (stats.connected && stats.size === 0 && !client.closed && !client.destroyed) idle.push(client)
    }
    const excess = idle.length - this.#keepalive
    if (excess <= 0) {
      if (this.#connected <= this.#keepalive) this.#stopPurge()
    } else {
      let n = purgeCount(excess)
      for (let i = idle.length - 1; i >= 0 && n > 0; i--) {
        const socket = this.#sockets.get(idle[i]!)
        if (socket && this.#written.get(socket) === socket.bytesWritten) {
          socket.destroy()
          n--
        }
      }
    }
    for (const client of this.#clients) {
      const socket = this.#sockets.get(client)
      if (socket && !socket.destroyed) this.#written.set(socket, socket.bytesWritten)
    }
  }

  #stopPurge(): void {
    clearInterval(this.#purgeTimer)
    this.#purgeTimer = undefined
  }

  // The overloads mirror Dispatcher's close/destroy (promise or callback).
  // biome-ignore lint/suspicious/noExplicitAny: Dispatcher's overloaded signatures
  override close(...args: any[]): any {
    this.#stopPurge()
    return Reflect.apply(super.close, this, args)
  }

  // biome-ignore lint/suspicious/noExplicitAny: Dispatcher's overloaded signatures
  override destroy(...args: any[]): any {
    this.#stopPurge()
    return Reflect.apply(super.destroy, this, args)
  }
}

function purgePool(pool: CappedPool): void {
  pool.purge()
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
  readonly #keepalive: number

  constructor(origin: string, options: Pool.Options, proxied: ProxiedPoolOptions, keepalive: number) {
    const connect = proxied.dialer.connector({ alpn: H1_ALPN, header: proxyHeader(proxied.version, undefined) })
    super(origin, { ...options, connect }, keepalive)
    this.#origin = origin
    this.#options = options
    this.#proxied = proxied
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
      pool = new CappedPool(this.#origin, { ...this.#options, connect }, this.#keepalive)
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
