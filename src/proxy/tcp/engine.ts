/** @module tcp-engine: the L4 engine: picks an upstream by SNI and pipes the decrypted bytes to one of its backends. */
import net from "node:net"
import tls, { type TLSSocket } from "node:tls"
import type { ListenerConfig } from "../../config/schema.ts"
import { PortcullisError } from "../../core/errors.ts"
import type { Logger } from "../../core/log.ts"
import { infoOf } from "../../listeners/connection-info.ts"
import { normalizeHost, type Router } from "../../routing/router.ts"
import type { Backend } from "../../upstreams/backend.ts"
import type { Upstream } from "../../upstreams/upstream.ts"
import { encodeProxyV1, encodeProxyV2, tlvsFromTlsSocket } from "../proxy-header.ts"
import { BACKEND_ONREAD, pipeConnection } from "./pipe.ts"

/** TcpEngineOptions: the listener's config slice and what the generation built for it. */
export interface TcpEngineOptions {
  listener: ListenerConfig
  router: Router
  upstreams: ReadonlyMap<string, Upstream>
  log: Logger
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
    const { listener, router, upstreams, log } = this.#options
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
    let header: Buffer | undefined
    if (version && info) {
      const addresses = {
        source: { address: info.clientAddress, port: info.clientPort },
        destination: { address: info.localAddress, port: info.localPort },
      }
      header = version === "v1" ? encodeProxyV1(addresses) : encodeProxyV2(addresses, tlvsFromTlsSocket(socket))
    }
    const tried = new Set<Backend>()
    let current: Backend | undefined
    const started = Date.now()
    pipeConnection(socket, {
      header,
      idleTimeoutMs: upstream.config.timeouts.idle,
      maxAttempts: upstream.config.retries + 1,
      log,
      connect: () => {
        const backend = upstream.pick({ exclude: tried })
        if (!backend || tried.has(backend)) {
          return Promise.reject(
            new PortcullisError("PC_NO_BACKEND", `upstream ${upstream.name}: no backend available`, {
              source: "backend",
            }),
          )
        }
        tried.add(backend)
        current = backend
        backend.inFlight++
        return connectBackend(upstream, backend).then(
          (s) => ({ socket: s, release: () => void backend.inFlight-- }),
          (err: unknown) => {
            backend.inFlight--
            throw err
          },
        )
      },
      onClose: (stats) => {
        log.info({
          type: "access",
          client: info?.clientAddress,
          sni: info?.servername,
          tls: info?.tlsVersion,
          cipher: info?.cipher,
          upstream: upstream.name,
          backend: current?.id,
          bytes_in: stats.bytesIn,
          bytes_out: stats.bytesOut,
          duration_ms: Date.now() - started,
          ...(stats.error && { error: stats.error.message }),
        })
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

/** connectBackend opens one backend connection (TLS when the upstream re-encrypts) within the connect timeout. */
function connectBackend(upstream: Upstream, backend: Backend): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const t = upstream.tls
    const { host, port } = backend.address
    const socket = t
      ? tls.connect({
          host,
          port,
          ca: t.ca,
          cert: t.cert,
          key: t.key?.reveal(),
          servername: t.servername,
          rejectUnauthorized: t.rejectUnauthorized,
        })
      : net.connect({ host, port, noDelay: true, onread: BACKEND_ONREAD })
    const timer = setTimeout(() => {
      socket.destroy()
      reject(
        new PortcullisError("PC_BACKEND_CONNECT_TIMEOUT", `connecting to ${backend.id}: timed out`, {
          source: "backend",
        }),
      )
    }, upstream.config.timeouts.connect)
    socket.once(t ? "secureConnect" : "connect", () => {
      clearTimeout(timer)
      socket.removeListener("error", onError)
      resolve(socket)
    })
    const onError = (err: Error) => {
      clearTimeout(timer)
      reject(err)
    }
    socket.once("error", onError)
  })
}
