/** @module tls-listener: a listener's TLS side for one generation: PROXY header in, handshake, then the engine. */
import type net from "node:net"
import tls, { type TLSSocket } from "node:tls"
import type { ListenerConfig } from "../config/schema.ts"
import { errorMessage } from "../core/errors.ts"
import type { Logger } from "../core/log.ts"
import type { CertStore } from "../tls/cert-store.ts"
import { attachInfo, type ProxiedSource, readConnectionInfo } from "./connection-info.ts"
import { readProxyHeader } from "./proxy-protocol/read-header.ts"
import { compileCidrs } from "./proxy-protocol/trusted.ts"

/** Engine is what a listener hands its decrypted sockets to (http or tcp). */
export interface Engine {
  handle(socket: TLSSocket): void
  close(graceMs: number, closeIdle?: boolean): Promise<void>
  destroy(): void
  readonly connections: number
}

const kSource = Symbol("portcullis.proxiedSource")
type WithSource = { [kSource]?: ProxiedSource }

/** TlsListenerStats: counted per generation, shown in the admin status. */
export interface TlsListenerStats {
  accepted: number
  handshakes: number
  handshakeErrors: number
  proxyHeaderErrors: number
}

/** TlsListener runs the handshake for one listener of one generation and passes sockets to its engine. */
export class TlsListener {
  readonly config: ListenerConfig
  readonly engine: Engine
  readonly certs: CertStore
  readonly stats: TlsListenerStats = { accepted: 0, handshakes: 0, handshakeErrors: 0, proxyHeaderErrors: 0 }
  readonly #server: tls.Server
  readonly #log: Logger
  readonly #isTrusted: (address: string) => boolean

  constructor(config: ListenerConfig, certs: CertStore, engine: Engine, log: Logger) {
    this.config = config
    this.certs = certs
    this.engine = engine
    this.#log = log
    this.#isTrusted = compileCidrs(config.trusted_proxies)
    const tlsConfig = config.tls!
    this.#server = tls.createServer({
      ...certs.secureOptions,
      SNICallback: certs.sniCallback,
      handshakeTimeout: tlsConfig.handshake_timeout,
    })
    const clientAuth = (tlsConfig.client_auth?.mode ?? "none") !== "none"
    this.#server.on("secureConnection", (socket: TLSSocket) => {
      this.stats.handshakes++
      const parent = (socket as unknown as { _parent?: WithSource })._parent
      const info = readConnectionInfo(socket, config.name, {
        source: parent?.[kSource],
        isTrusted: this.#isTrusted,
        clientAuth,
      })
      attachInfo(socket, info)
      socket.on("error", ignore)
      engine.handle(socket)
    })
    this.#server.on("tlsClientError", (err: Error) => {
      this.stats.handshakeErrors++
      this.#log.debug({ listener: config.name, err: errorMessage(err) }, "tls handshake failed")
    })
  }

  /** accept takes a raw TCP socket from the listener socket. */
  accept(socket: net.Socket): void {
    this.stats.accepted++
    if (this.config.proxy_protocol !== "accept") {
      this.#server.emit("connection", socket)
      return
    }
    const peer = socket.remoteAddress ?? ""
    if (!this.#isTrusted(peer.startsWith("::ffff:") ? peer.slice(7) : peer)) {
      // A PROXY header is only believed from trusted_proxies; anyone else is refused, not believed.
      this.stats.proxyHeaderErrors++
      this.#log.debug({ listener: this.config.name, peer }, "proxy protocol from an untrusted peer refused")
      socket.destroy()
      return
    }
    readProxyHeader(socket, { timeoutMs: this.config.tls?.handshake_timeout ?? 10_000 }).then(
      (header) => {
        if (header) (socket as WithSource)[kSource] = { address: header.source.address, port: header.source.port }
        this.#server.emit("connection", socket)
      },
      (err: unknown) => {
        this.stats.proxyHeaderErrors++
        this.#log.debug({ listener: this.config.name, peer, err: errorMessage(err) }, "bad proxy protocol header")
        socket.destroy()
      },
    )
  }

  /** close lets the engine finish in-flight work within graceMs. */
  async close(graceMs: number, closeIdle = true): Promise<void> {
    await this.engine.close(graceMs, closeIdle)
  }

  destroy(): void {
    this.engine.destroy()
  }

  status() {
    return {
      name: this.config.name,
      address: this.config.address,
      engine: this.config.engine,
      connections: this.engine.connections,
      ...this.stats,
      certificates: this.certs.status(),
    }
  }
}

function ignore(): void {}
