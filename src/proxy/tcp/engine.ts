/** @module tcp-engine: the L4 engine: picks an upstream by SNI and pipes the decrypted bytes to one of its backends. */
import type net from "node:net"
import type { TLSSocket } from "node:tls"
import type { ListenerConfig } from "../../config/schema.ts"
import type { AccessLog } from "../../core/access-log.ts"
import { infoOf } from "../../core/connection-info.ts"
import { PortcullisError } from "../../core/errors.ts"
import { classify } from "../../core/failure.ts"
import type { Logger } from "../../core/log.ts"
import { normalizeHost, type Router } from "../../routing/router.ts"
import type { Backend } from "../../upstreams/backend.ts"
import { type DialOptions, proxyHeader } from "../../upstreams/dial.ts"
import type { Upstream } from "../../upstreams/upstream.ts"
import { BACKEND_ONREAD, pipeConnection } from "./pipe.ts"

/** TcpEngineOptions: the listener's config slice and what the generation built for it. */
export interface TcpEngineOptions {
  listener: ListenerConfig
  router: Router
  upstreams: ReadonlyMap<string, Upstream>
  log: Logger
  /** Where a closed connection's access line goes; undefined when `access_log.enabled` is false. */
  accessLog: AccessLog | undefined
}

/** TcpEngine serves one tcp listener's decrypted connections for one generation. */
export class TcpEngine {
  readonly #options: TcpEngineOptions
  readonly #sockets = new Set<TLSSocket>()

  constructor(options: TcpEngineOptions) {
    this.#options = options
  }

  get connections(): number {
    return this.#sockets.size
  }

  handle(socket: TLSSocket): void {
    const { listener, router, upstreams, log, accessLog } = this.#options
    const info = infoOf(socket)
    const route = router.match(normalizeHost(info?.servername), "/")
    if (!route) {
      log.debug({ sni: info?.servername }, "tcp: no route for this SNI")
      socket.destroy()
      return
    }
    const upstream = upstreams.get(route.upstream)!
    this.#sockets.add(socket)
    socket.on("close", () => this.#sockets.delete(socket))
    const version = listener.send_proxy_protocol ?? upstream.config.send_proxy_protocol
    // The dialer writes the PROXY header first on the backend connection (before the ClientHello when re-encrypting).
    const dial: DialOptions = {
      header: version && info ? proxyHeader(version, info, socket) : undefined,
      onread: BACKEND_ONREAD,
    }
    const tried = new Set<Backend>()
    // `balance: hash` on a tcp listener can only hash the client address (no path, header or cookie at L4).
    const key = upstream.hashKey?.kind === "client_ip" ? info?.clientAddress : undefined
    let current: Backend | undefined
    let full = false
    const started = Date.now()
    pipeConnection(socket, {
      idleTimeoutMs: upstream.config.timeouts.idle,
      maxAttempts: upstream.config.retries + 1,
      log,
      connect: () => {
        const backend = upstream.pick({ key, exclude: tried })
        if (!backend || tried.has(backend)) {
          // Every backend that could take it is at max_connections: HAProxy would queue; an L4 client is closed.
          if (!full && upstream.saturated(tried)) {
            full = true
            upstream.rejectedFull()
          }
          return Promise.reject(
            new PortcullisError(
              full ? "PC_BACKEND_FULL" : "PC_NO_BACKEND",
              `upstream ${upstream.name}: ${full ? "every backend is at max_connections" : "no backend available"}`,
              { source: "backend" },
            ),
          )
        }
        tried.add(backend)
        current = backend
        upstream.acquire(backend)
        return connectBackend(upstream, backend, dial).then(
          (s) => {
            upstream.succeeded(backend)
            return { socket: s, release: () => upstream.release(backend) }
          },
          (err: unknown) => {
            upstream.release(backend)
            // Passive health: a backend that keeps refusing is ejected, so later clients skip it at once.
            upstream.failed(backend, classify(err), { client: info?.clientAddress, route })
            throw err
          },
        )
      },
      onClose: (stats) => {
        accessLog?.tcp(
          info,
          listener.name,
          upstream.name,
          current?.id,
          stats.bytesIn,
          stats.bytesOut,
          Date.now() - started,
          stats.error?.message,
        )
        const err = stats.error
        const failure = err && classify(err)
        if (failure && failure.source !== "client") {
          // A backend that could not be reached (e.g. a TLS verification failure) is the operator's to fix: say why.
          log.warn(
            { upstream: upstream.name, backend: current?.id, err: err.message, code: failure.code },
            `backend error (${failure.code})`,
          )
        }
      },
    })
  }

  async close(graceMs: number): Promise<void> {
    const deadline = Date.now() + graceMs
    while (this.#sockets.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50))
    this.destroy()
  }

  destroy(): void {
    for (const s of this.#sockets) s.destroy()
  }
}

/**
 * connectBackend opens one backend connection through the backend's dialer (TLS when the upstream re-encrypts, with
 * the dialer's SNI and the session cache the HTTP pools and health checks share; no ALPN) within the connect timeout.
 */
function connectBackend(upstream: Upstream, backend: Backend, options: DialOptions): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    upstream.dialerFor(backend).dial(options, (err, socket) => (err ? reject(err) : resolve(socket!)))
  })
}
