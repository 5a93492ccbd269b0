/** @module tls-listener: a listener's TLS side for one generation: PROXY header in, handshake, then the engine. */
import type net from "node:net"
import tls, { type TLSSocket } from "node:tls"
import type { ListenerConfig } from "../config/schema.ts"
import { unmapIPv4 } from "../core/address.ts"
import { attachInfo, type ProxiedSource, readConnectionInfo } from "../core/connection-info.ts"
import { errorMessage } from "../core/errors.ts"
import type { Logger } from "../core/log.ts"
import { detachedInstruments, type ListenerCounters } from "../state/instruments.ts"
import type { CertStore, ClientAuthPolicy } from "../tls/cert-store.ts"
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
const kDeadline = Symbol("portcullis.handshakeDeadline")
const kTls = Symbol("portcullis.tlsSocket")
/** What a raw socket carries through the handshake: the PROXY header's source, the deadline, the TLS socket. */
const kServed = Symbol("portcullis.served")
type WithSource = {
  [kSource]?: ProxiedSource
  [kDeadline]?: ReturnType<typeof setTimeout>
  [kTls]?: TLSSocket
  [kServed]?: Served
}

/** Served: how the sockets of one SecureContext are built and judged (its client_auth policy). */
interface Served {
  options: tls.TLSSocketOptions
  auth: ClientAuthPolicy
}

/** The native handle's verification result: what tls.Server itself reads after a server-side handshake. */
type VerifyingHandle = { verifyError(): (Error & { code?: string }) | null }

/**
 * TlsListener runs the handshake for one listener of one generation and passes sockets to its engine.
 *
 * It builds each server TLSSocket itself rather than through tls.Server: the SNI name is read off the ClientHello
 * first (CertStore.contextForSocket) and the socket starts on that name's SecureContext, which holds the ECDSA and
 * the RSA certificate alike; Node's SNICallback would install only one of them. A listener with a single context
 * skips the peek.
 */
export class TlsListener {
  readonly config: ListenerConfig
  readonly engine: Engine
  readonly certs: CertStore
  /** Counts by listener name, kept by the runtime across generations (so a reload keeps them). */
  readonly stats: ListenerCounters
  readonly #log: Logger
  readonly #isTrusted: (address: string) => boolean
  /** Weak: a context CertStore.replace swapped out goes once its last socket does. */
  readonly #served = new WeakMap<tls.SecureContext, Served>()
  readonly #handshakeTimeout: number
  readonly #onSecure: (this: TLSSocket) => void
  readonly #onHandshakeError: (this: TLSSocket, err: Error) => void
  readonly #onEarlyClose: (this: TLSSocket) => void

  constructor(config: ListenerConfig, certs: CertStore, engine: Engine, log: Logger, stats?: ListenerCounters) {
    this.config = config
    this.stats = stats ?? detachedInstruments().listener(config.name)
    this.certs = certs
    this.engine = engine
    this.#log = log
    this.#isTrusted = compileCidrs(config.trusted_proxies)
    const tlsConfig = config.tls!
    this.#handshakeTimeout = tlsConfig.handshake_timeout
    const listener = this
    this.#onSecure = function (this: TLSSocket) {
      listener.#secured(this)
    }
    this.#onHandshakeError = function (this: TLSSocket, err: Error) {
      listener.#failed(this, err)
    }
    // Any close before 'secure' is a failed handshake: a TLS error, a timeout, a reset, a refused certificate.
    this.#onEarlyClose = function (this: TLSSocket) {
      listener.stats.handshakeErrors.inc()
      endHandshake(this)
    }
  }

  /** accept takes a raw TCP socket from the listener socket. */
  accept(socket: net.Socket): void {
    this.stats.accepted.inc()
    if (this.config.proxy_protocol !== "accept") {
      this.#handshake(socket)
      return
    }
    const peer = unmapIPv4(socket.remoteAddress)
    if (!this.#isTrusted(peer)) {
      // A PROXY header is only believed from trusted_proxies; anyone else is refused, not believed.
      this.stats.proxyHeaderErrors.inc()
      this.#log.debug({ listener: this.config.name, peer }, "proxy protocol from an untrusted peer refused")
      socket.destroy()
      return
    }
    readProxyHeader(socket, { timeoutMs: this.#handshakeTimeout }).then(
      (header) => {
        if (header) (socket as WithSource)[kSource] = { address: header.source.address, port: header.source.port }
        this.#handshake(socket)
      },
      (err: unknown) => {
        this.stats.proxyHeaderErrors.inc()
        this.#log.debug({ listener: this.config.name, peer, err: errorMessage(err) }, "bad proxy protocol header")
        socket.destroy()
      },
    )
  }

  #handshake(raw: net.Socket): void {
    raw.on("error", ignore)
    // The whole handshake, ClientHello peek included, must finish within handshake_timeout: a deadline, not an
    // idle timer, so a client trickling bytes cannot hold the connection open.
    ;(raw as WithSource)[kDeadline] = setTimeout(() => expireHandshake(raw), this.#handshakeTimeout)
    if (this.certs.single) {
      this.#wrap(raw, this.certs.contextFor(undefined))
      return
    }
    this.certs.contextForSocket(raw, this.#handshakeTimeout).then(
      (context) => this.#wrap(raw, context),
      () => raw.destroy(),
    )
  }

  #wrap(raw: net.Socket, secureContext: tls.SecureContext): void {
    if (raw.destroyed) {
      this.stats.handshakeErrors.inc()
      return
    }
    const served = this.#servedBy(secureContext)
    const socket = new tls.TLSSocket(raw, served.options)
    ;(raw as WithSource)[kTls] = socket
    ;(raw as WithSource)[kServed] = served
    socket.once("secure", this.#onSecure)
    // Until control is released, Node reports handshake failures as '_tlsError', as tls.Server listens for them.
    socket.on("_tlsError", this.#onHandshakeError)
    socket.once("close", this.#onEarlyClose)
  }

  /** servedBy builds, once per context, the socket options its client_auth policy calls for. */
  #servedBy(secureContext: tls.SecureContext): Served {
    let served = this.#served.get(secureContext)
    if (!served) {
      const auth = this.certs.clientAuthOf(secureContext)
      served = {
        auth,
        options: {
          isServer: true,
          secureContext,
          requestCert: auth.mode !== "none",
          // require: a client without a certificate fails in the handshake; a bad one is judged in #secured.
          rejectUnauthorized: auth.mode === "require",
          ALPNProtocols: this.certs.secureOptions.ALPNProtocols as string[] | undefined,
        },
      }
      this.#served.set(secureContext, served)
    }
    return served
  }

  #secured(socket: TLSSocket): void {
    const raw = endHandshake(socket)
    socket.off("_tlsError", this.#onHandshakeError)
    socket.off("close", this.#onEarlyClose)
    socket.on("error", ignore)
    const auth = raw?.[kServed]?.auth ?? this.certs.clientAuthOf(this.certs.contextFor(undefined))
    if (auth.mode !== "none" && !this.#verifyClient(socket, auth.mode === "require")) {
      this.stats.handshakeErrors.inc()
      this.#log.debug({ listener: this.config.name, err: socket.authorizationError }, "client certificate refused")
      socket.destroy()
      return
    }
    // What tls.Server does once a handshake is done: errors become 'error' events and the socket counts as open.
    ;(socket as unknown as { _releaseControl(): boolean })._releaseControl()
    ;(socket as unknown as { secureConnecting: boolean }).secureConnecting = false
    this.stats.handshakes.inc()
    const info = readConnectionInfo(socket, this.config.name, {
      source: raw?.[kSource],
      isTrusted: this.#isTrusted,
      clientAuth: auth.mode !== "none",
      forwardCert: auth.forwardCert,
      forwardFormat: auth.forwardFormat,
    })
    attachInfo(socket, info)
    this.engine.handle(socket)
  }

  /**
   * verifyClient reads the verdict Node's verify callback left on the handle (it lets every certificate through the
   * handshake): sets authorized or authorizationError as tls.Server would, and says whether the client may stay
   * (require: only when verified; request: always).
   */
  #verifyClient(socket: TLSSocket, require: boolean): boolean {
    const verifyError = (socket as unknown as { _handle?: VerifyingHandle })._handle?.verifyError()
    let error: string | undefined
    if (verifyError) error = verifyError.code ?? verifyError.message
    // A TLS 1.3 resumption carries no certificate and reports X509_V_OK: it is not a verified client.
    else if (!socket.getPeerX509Certificate()) error = "UNABLE_TO_GET_ISSUER_CERT"
    if (error === undefined) {
      socket.authorized = true
      return true
    }
    ;(socket as unknown as { authorizationError: string }).authorizationError = error
    return !require
  }

  #failed(socket: TLSSocket, err: Error): void {
    this.#log.debug({ listener: this.config.name, err: errorMessage(err) }, "tls handshake failed")
    socket.destroy()
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
      accepted: this.stats.accepted.value,
      handshakes: this.stats.handshakes.value,
      handshake_errors: this.stats.handshakeErrors.value,
      proxy_header_errors: this.stats.proxyHeaderErrors.value,
      certificates: this.certs.status().map((c) => ({
        names: c.names,
        key_type: c.keyType,
        not_after: c.notAfter,
        fingerprint256: c.fingerprint256,
        source: c.source,
      })),
    }
  }
}

function ignore(): void {}

/** endHandshake clears the handshake's deadline on the raw socket under socket, and returns that raw socket. */
function endHandshake(socket: TLSSocket): (net.Socket & WithSource) | undefined {
  const raw = (socket as unknown as { _parent?: net.Socket & WithSource })._parent
  if (raw) {
    clearTimeout(raw[kDeadline])
    raw[kTls] = undefined
  }
  return raw
}

function expireHandshake(raw: net.Socket & WithSource): void {
  const socket = raw[kTls]
  raw[kTls] = undefined
  if (socket) socket.destroy()
  raw.destroy()
}
