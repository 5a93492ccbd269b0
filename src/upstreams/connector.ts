/** @module connector: opens backend connections, plain TCP or TLS (re-encryption, optional mTLS), kept alive in a pool. */
import { readFileSync } from "node:fs"
import net from "node:net"
import tls, { type TLSSocket } from "node:tls"
import { buildConnector, type Dispatcher, errors, Pool } from "undici"
import type { UpstreamConfig } from "../config/schema.ts"
import { type ConnectionInfo, infoOf, socketOf } from "../core/connection-info.ts"
import { TlsError } from "../core/errors.ts"
import type { Logger } from "../core/log.ts"
import { Secret } from "../core/secret.ts"
import {
  encodeProxyV1,
  encodeProxyV2,
  encodeProxyV2Local,
  tlvsFromTlsSocket,
} from "../protocols/proxy-protocol/encode.ts"
import type { Backend } from "./backend.ts"
import { type BackendPool, LeanPool } from "./h1/lean-pool.ts"
import { H2Pool } from "./h2/h2-pool.ts"

export type { BackendPool }

/** BackendTls is the upstream's TLS material, read once per generation. */
export interface BackendTls {
  ca?: Buffer
  cert?: Buffer
  key?: Secret<Buffer>
  servername?: string
  rejectUnauthorized: boolean
}

/** loadBackendTls reads the upstream's CA, client certificate and key files; errors name the file. */
export function loadBackendTls(name: string, config: UpstreamConfig, log: Logger): BackendTls | undefined {
  const tls = config.tls
  if (!tls) return undefined
  const read = (what: string, path: string | undefined) => {
    if (path === undefined) return undefined
    try {
      return readFileSync(path)
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code ?? "error"
      throw new TlsError("PC_TLS_CERT_LOAD", `upstream ${name}: reading ${what} ${path}: ${code}`, { cause: err })
    }
  }
  if (tls.insecure_skip_verify) {
    log.warn({ upstream: name }, `upstream ${name}: insecure_skip_verify is on: backend certificates are not verified`)
  }
  const key = read("key", tls.key)
  return {
    ca: read("ca", tls.ca),
    cert: read("cert", tls.cert),
    key: key ? new Secret(key) : undefined,
    servername: tls.servername,
    rejectUnauthorized: !tls.insecure_skip_verify,
  }
}

/**
 * createBackendPool makes the keep-alive connection pool for one backend. Plain backends without
 * `send_proxy_protocol` get the lean HTTP/1.1 client (h1/lean-pool.ts), which hands what it does not do (streamed
 * bodies, upgrades, Expect) to an undici pool made on first need. TLS backends use undici. With
 * `send_proxy_protocol` every backend connection starts with a PROXY header naming one client, so connections are
 * never shared between clients: see ProxiedPool.
 */
export function createBackendPool(backend: Backend, config: UpstreamConfig, tls: BackendTls | undefined): BackendPool {
  const host = backend.address.host.includes(":") ? `[${backend.address.host}]` : backend.address.host
  const origin = `${tls ? "https" : "http"}://${host}:${backend.address.port}`
  const tlsOptions = tls && {
    ca: tls.ca,
    cert: tls.cert,
    key: tls.key?.reveal(),
    servername: tls.servername ?? (isHostname(backend.address.host) ? backend.address.host : undefined),
    rejectUnauthorized: tls.rejectUnauthorized,
    ALPNProtocols: ["http/1.1"],
  }
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
    connect: { timeout: config.timeouts.connect },
  }
  // One TLS connector per backend: its session cache is shared by every connection (and every per-client pool) to
  // this backend, so re-encrypted connections resume TLS sessions. undici would take the SNI from the request's Host
  // (the client's), so the connector pins it to the configured servername, else the backend's host name, else none.
  const tlsConnector = tlsOptions
    ? pinnedServername(buildConnector({ ...tlsOptions, timeout: config.timeouts.connect }))
    : undefined
  if (tlsConnector) options.connect = tlsConnector
  if (config.protocol !== "http1") return createH2Pool(backend, config, tlsOptions)
  const version = config.send_proxy_protocol
  if (!version && !tls) {
    return new LeanPool({
      host: backend.address.host,
      port: backend.address.port,
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
  return new ProxiedPool(
    origin,
    options,
    {
      version,
      address: backend.address,
      connectTimeoutMs: config.timeouts.connect,
      tlsConnector,
    },
    backend,
    config.keepalive,
  )
}

/** Sessions (connections) per HTTP/2 backend: a few, so that one slow connection does not hold every stream. */
const H2_SESSIONS = 4

/** createH2Pool: HTTP/2 to one backend, over TLS with ALPN h2 (protocol h2) or plain TCP (h2c). */
function createH2Pool(
  backend: Backend,
  config: UpstreamConfig,
  tlsOptions: (tls.ConnectionOptions & { servername?: string | undefined }) | undefined,
): BackendPool {
  const { host, port } = backend.address
  const authority = `${host.includes(":") ? `[${host}]` : host}:${port}`
  const timeout = config.timeouts.connect
  return new H2Pool({
    scheme: tlsOptions ? "https" : "http",
    authority,
    sessions: H2_SESSIONS,
    maxStreams: backend.maxConnections,
    headersTimeout: config.timeouts.response,
    bodyTimeout: config.timeouts.idle,
    idleTimeout: config.timeouts.idle,
    connect: (callback) => {
      let done = false
      const finish = (err: Error | null, socket?: net.Socket) => {
        if (done) return
        done = true
        clearTimeout(timer)
        if (err) socket?.destroy()
        callback(err, err ? undefined : socket)
      }
      const socket = tlsOptions
        ? tls.connect({ host, port, ...tlsOptions, ALPNProtocols: ["h2"] }, () => {
            const alpn = (socket as tls.TLSSocket).alpnProtocol
            if (alpn !== "h2") {
              finish(
                Object.assign(new Error(`backend ${authority} did not negotiate HTTP/2 (ALPN ${alpn || "none"})`), {
                  code: "PC_BACKEND_NO_H2",
                }),
                socket,
              )
            } else finish(null, socket)
          })
        : net.connect({ host, port }, () => finish(null, socket))
      socket.setNoDelay(true)
      const timer = setTimeout(() => {
        finish(
          Object.assign(new Error(`connect to ${authority} timed out after ${timeout} ms`), {
            code: "UND_ERR_CONNECT_TIMEOUT",
          }),
          socket,
        )
      }, timeout)
      socket.once("error", (err) => finish(err, socket))
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
class CappedPool extends Pool {
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

/** ProxiedPoolOptions: which PROXY version to send, where to connect, and the TLS step after the header. */
interface ProxiedPoolOptions {
  version: "v1" | "v2"
  address: { host: string; port: number }
  connectTimeoutMs: number
  tlsConnector: buildConnector.connector | undefined
}

/**
 * ProxiedPool is a backend pool for `send_proxy_protocol`: the PROXY header goes first on each backend connection and
 * names one client, so requests are sent on a pool of their own per client connection (found by the ConnectionInfo
 * tag that buildRequestHeaders puts on the header list), closed when that client connection closes. HTTP/2 streams
 * of one client share its pool. This costs a backend connection per client connection (as haproxy's send-proxy does
 * with http-reuse never) but a backend can never attribute a request to the wrong client. Requests with no client
 * tag go through the base pool with a LOCAL (v2) or UNKNOWN (v1) header.
 */
class ProxiedPool extends CappedPool {
  readonly #origin: string
  readonly #options: Pool.Options
  readonly #proxied: ProxiedPoolOptions
  readonly #byClient = new Map<ConnectionInfo, CappedPool>()
  readonly #backend: Backend
  readonly #keepalive: number

  constructor(origin: string, options: Pool.Options, proxied: ProxiedPoolOptions, backend: Backend, keepalive: number) {
    const unknown = proxied.version === "v1" ? encodeProxyV1(UNKNOWN_ENDPOINTS) : encodeProxyV2Local()
    super(origin, { ...options, connect: connectWithHeader(() => unknown, proxied) }, backend, keepalive)
    this.#origin = origin
    this.#options = options
    this.#proxied = proxied
    this.#backend = backend
    this.#keepalive = keepalive
  }

  override dispatch(options: Dispatcher.DispatchOptions, handler: Dispatcher.DispatchHandler): boolean {
    const info = infoOf(options.headers)
    if (!info) return super.dispatch(options, handler)
    let pool = this.#byClient.get(info)
    if (!pool) {
      const client = socketOf(info)
      const header = proxyHeaderFor(this.#proxied.version, info, client)
      const connect = connectWithHeader(() => header, this.#proxied)
      pool = new CappedPool(this.#origin, { ...this.#options, connect }, this.#backend, this.#keepalive)
      this.#byClient.set(info, pool)
      const own = pool
      const forget = () => {
        if (this.#byClient.get(info) === own) this.#byClient.delete(info)
        own.close().catch(ignore)
      }
      if (client && !client.destroyed) client.once("close", forget)
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

/** pinnedServername drops the per-request servername undici passes (from the Host header), keeping the built one. */
function pinnedServername(connector: buildConnector.connector): buildConnector.connector {
  return (options, callback) => connector({ ...options, servername: undefined }, callback)
}

const UNKNOWN_ENDPOINTS = { source: { address: "", port: 0 }, destination: { address: "", port: 0 } }

/** proxyHeaderFor encodes the header for one client connection: its addresses and, for v2, its TLS TLVs. */
function proxyHeaderFor(version: "v1" | "v2", info: ConnectionInfo, socket: TLSSocket | undefined): Buffer {
  const endpoints = {
    source: { address: info.clientAddress, port: info.clientPort },
    destination: { address: info.localAddress, port: info.localPort },
  }
  return version === "v1" ? encodeProxyV1(endpoints) : encodeProxyV2(endpoints, socket ? tlvsFromTlsSocket(socket) : {})
}

/**
 * connectWithHeader is an undici connector that opens the TCP connection, writes the PROXY header, and then (for a
 * re-encrypting upstream) runs the TLS handshake over that same socket: the header precedes the ClientHello.
 */
function connectWithHeader(header: () => Buffer, proxied: ProxiedPoolOptions): buildConnector.connector {
  return (options, callback) => {
    const { host, port } = proxied.address
    const socket = net.connect({ host, port, noDelay: true })
    let settled = false
    const fail = (err: Error) => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      socket.destroy()
      callback(err, null)
    }
    const timer = setTimeout(
      () => fail(new errors.ConnectTimeoutError(`connecting to ${host}:${port}: timed out`)),
      proxied.connectTimeoutMs,
    )
    socket.once("error", fail)
    socket.once("connect", () => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      socket.off("error", fail)
      socket.write(header())
      if (proxied.tlsConnector) proxied.tlsConnector({ ...options, httpSocket: socket }, callback)
      else callback(null, socket)
    })
  }
}

function ignore(): void {}

function isHostname(host: string): boolean {
  return !/^[\d.]+$/.test(host) && !host.includes(":")
}
