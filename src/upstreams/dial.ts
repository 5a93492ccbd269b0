/**
 * @module dial: the one way to open a connection to a backend: TCP, the PROXY header first when asked, then TLS
 * (re-encryption) with one SNI rule and one session cache per backend. The HTTP pools, the tcp engine and active
 * health all dial through a backend's Dialer, so they send the same SNI and resume each other's TLS sessions.
 */

import net from "node:net"
import tls, { type TLSSocket } from "node:tls"
import { type buildConnector, errors } from "undici"
import { type ConnectionInfo, socketOf } from "../core/connection-info.ts"
import { BackendError } from "../core/errors.ts"
import {
  encodeProxyV1,
  encodeProxyV2,
  encodeProxyV2Local,
  tlvsFromTlsSocket,
} from "../protocols/proxy-protocol/encode.ts"
import type { Histogram } from "../state/registry.ts"

/** DialTls is the TLS material a backend is dialled with (the upstream's `tls`, the key already revealed). */
export interface DialTls {
  ca?: string | Buffer | undefined
  cert?: string | Buffer | undefined
  key?: string | Buffer | undefined
  /** SNI and the name verified on the backend certificate; see sniFor for the default. */
  servername?: string | undefined
  rejectUnauthorized: boolean
}

/** DialPeer is one backend as the dialer sees it: where it is, TLS or not, the upstream's connect timeout. */
export interface DialPeer {
  host: string
  port: number
  tls?: DialTls | undefined
  /** ms; the default of DialOptions.timeout. */
  connectTimeout: number
}

/** DialOptions are what one caller asks of one connection. */
export interface DialOptions {
  /** Written before anything else (before the ClientHello on TLS): a PROXY header from proxyHeader(). */
  header?: Buffer | undefined
  /** ALPN protocols offered on TLS (none when undefined): ["http/1.1"] for the HTTP/1.1 pools, ["h2"] for HTTP/2. */
  alpn?: readonly string[] | undefined
  /** ms from the start to a connected (and, for TLS, handshaken) socket; 0: no timer (the caller bounds the dial). */
  timeout?: number | undefined
  /** Plain backends only: Node's `onread` (reads into the caller's buffer; the tcp engine's shared one). */
  onread?: net.OnReadOpts | undefined
}

/** DialCallback hears once: an error, or the connected socket (a TLSSocket when the backend is TLS). */
export type DialCallback = (err: Error | null, socket?: net.Socket) => void

/**
 * sniFor is the one SNI rule for backend connections: the configured servername, else the backend's host when it
 * is a host name, else none (an IP address is never sent as SNI, RFC 6066 §3). Never the client's Host: the
 * backend connection is the proxy's, and a pool's connections serve every virtual host.
 */
export function sniFor(host: string, servername: string | undefined): string | undefined {
  if (servername !== undefined && servername !== "") return servername
  return net.isIP(host) === 0 ? host : undefined
}

const UNKNOWN_ENDPOINTS = { source: { address: "", port: 0 }, destination: { address: "", port: 0 } }

/**
 * proxyHeader encodes the PROXY header for a backend connection: the client's endpoints (and, for v2, the TLS
 * TLVs of its socket), or, with no client (a health check: the proxy's own connection), v2 LOCAL / v1 UNKNOWN.
 */
export function proxyHeader(
  version: "v1" | "v2",
  client: ConnectionInfo | undefined,
  socket: TLSSocket | undefined = client && socketOf(client),
): Buffer {
  if (!client) return version === "v1" ? encodeProxyV1(UNKNOWN_ENDPOINTS) : encodeProxyV2Local()
  const endpoints = {
    source: { address: client.clientAddress, port: client.clientPort },
    destination: { address: client.localAddress, port: client.localPort },
  }
  return version === "v1" ? encodeProxyV1(endpoints) : encodeProxyV2(endpoints, socket ? tlvsFromTlsSocket(socket) : {})
}

/**
 * Dialer opens connections to one backend. It holds that backend's TLS session cache (the newest session: every
 * connection has the same SNI, client certificate and trust, so one entry is enough) and its TLS context, built
 * on first use. One Dialer per backend per generation (Upstream.dialerFor).
 */
export class Dialer {
  readonly host: string
  readonly port: number
  /** The SNI every TLS connection to this backend sends (sniFor), undefined for none or a plain backend. */
  readonly servername: string | undefined
  /** The TLS material until the context is built from it (then only rejectUnauthorized is kept). */
  #material: DialTls | undefined
  readonly #isTls: boolean
  readonly #rejectUnauthorized: boolean
  readonly #connectTimeout: number
  readonly #id: string
  #context: tls.SecureContext | undefined
  #session: Buffer | undefined
  /** Where connect times of proxied traffic go (set by the upstream; health checks leave it unset). */
  connectDuration: Histogram | undefined

  constructor(peer: DialPeer) {
    this.host = peer.host
    this.port = peer.port
    this.#material = peer.tls
    this.#isTls = peer.tls !== undefined
    this.#rejectUnauthorized = peer.tls?.rejectUnauthorized ?? true
    this.#connectTimeout = peer.connectTimeout
    this.servername = peer.tls ? sniFor(peer.host, peer.tls.servername) : undefined
    this.#id = peer.host.includes(":") ? `[${peer.host}]:${peer.port}` : `${peer.host}:${peer.port}`
  }

  /** tls tells whether connections to this backend are TLS. */
  get tls(): boolean {
    return this.#isTls
  }

  /** session is the TLS session the next connection offers (for tests and status). */
  get session(): Buffer | undefined {
    return this.#session
  }

  /**
   * tcp opens the plain TCP connection, the first step of every dial (Nagle off: requests and small records go out
   * at once). The lean HTTP/1.1 client calls it directly: it reads with `onread` into its own buffers and runs the
   * connect timeout on the socket's own timer, which it re-arms for each later phase.
   */
  tcp(options: { onread?: net.OnReadOpts; allowHalfOpen?: boolean } = {}): net.Socket {
    const socket = this.#tcp(options)
    const histogram = this.connectDuration
    if (histogram !== undefined) {
      const started = performance.now()
      socket.once("connect", () => histogram.observe((performance.now() - started) / 1000))
    }
    return socket
  }

  #tcp(options: { onread?: net.OnReadOpts; allowHalfOpen?: boolean }): net.Socket {
    return net.connect({ host: this.host, port: this.port, noDelay: true, ...options })
  }

  /**
   * dial opens a connection and calls back once it is connected, the header written and the TLS handshake done.
   * Errors: the socket's (ECONNREFUSED, ECONNRESET, a TLS verification code), PC_BACKEND_CONNECT_TIMEOUT after
   * `timeout`, PC_BACKEND_CLOSED when it closes before it is established. Returns the outermost socket now;
   * destroying it cancels the dial (the callback hears the error).
   */
  dial(options: DialOptions, callback: DialCallback): net.Socket {
    const timeout = options.timeout ?? this.#connectTimeout
    const header = options.header
    const t = this.#isTls
    let context: tls.SecureContext | undefined
    if (t) {
      try {
        context = this.#secureContext()
      } catch (err) {
        const failed = new net.Socket()
        queueMicrotask(() => callback(err as Error))
        return failed
      }
    }
    // Connect time as the proxy waits for it: TCP, the PROXY header and the TLS handshake.
    const histogram = this.connectDuration
    const started = histogram === undefined ? 0 : performance.now()
    let settled = false
    let timer: NodeJS.Timeout | undefined
    let secure: TLSSocket | undefined
    let handshaking = false
    const finish = (err: Error | null) => {
      if (settled) return
      settled = true
      if (timer !== undefined) clearTimeout(timer)
      if (err === null) {
        if (histogram !== undefined) histogram.observe((performance.now() - started) / 1000)
        callback(null, secure ?? raw)
        return
      }
      // A session that led to a failed handshake is not offered again (a refused connect says nothing about it).
      if (handshaking) this.#session = undefined
      secure?.destroy()
      raw.destroy()
      callback(err)
    }
    // Kept after the dial: an error between the callback and the caller's own listeners must not go unheard.
    const onError = (err: Error) => finish(err)
    const onClose = () =>
      finish(
        new BackendError("PC_BACKEND_CLOSED", `connecting to ${this.#id}: connection closed before it was established`),
      )
    const startTls = (socket: net.Socket | undefined): TLSSocket => {
      const s = tls.connect({
        host: this.host,
        port: this.port,
        socket,
        secureContext: context,
        servername: this.servername,
        session: this.#session,
        rejectUnauthorized: this.#rejectUnauthorized,
        ALPNProtocols: options.alpn as string[] | undefined,
      })
      s.setNoDelay(true)
      // TLS 1.3 tickets arrive after the handshake, possibly several: keep the newest.
      s.on("session", (session: Buffer) => {
        this.#session = session
      })
      s.on("error", onError)
      s.once("close", onClose)
      s.once("secureConnect", () => finish(null))
      if (socket) handshaking = true
      else
        s.once("connect", () => {
          handshaking = true
        })
      return s
    }
    let raw: net.Socket
    if (t && header === undefined) {
      secure = startTls(undefined)
      raw = secure
    } else {
      raw = this.#tcp(t || options.onread === undefined ? {} : { onread: options.onread })
      raw.on("error", onError)
      raw.once("close", onClose)
      raw.once("connect", () => {
        if (settled) return
        // The PROXY header is the first byte on the wire, before the ClientHello (PROXY protocol spec §2).
        if (t) {
          if (header !== undefined) raw.write(header)
          secure = startTls(raw)
        } else if (header !== undefined) {
          // Plain: done once the header is handed to the kernel, so a caller that only probes (a tcp health check)
          // and closes at once still delivers it.
          raw.write(header, (err) => finish(err ?? null))
        } else finish(null)
      })
    }
    if (timeout > 0) {
      timer = setTimeout(
        () =>
          finish(
            new BackendError("PC_BACKEND_CONNECT_TIMEOUT", `connecting to ${this.#id}: timed out after ${timeout} ms`),
          ),
        timeout,
      )
    }
    return raw
  }

  /**
   * connector is this dialer as undici's `connect` option. undici would take the SNI from each request's Host (the
   * client's) and keep its own session cache; here the request's servername is ignored and the dialer's are used.
   * A timeout becomes undici's ConnectTimeoutError (UND_ERR_CONNECT_TIMEOUT), which retries and error statuses
   * match on. TCP keep-alive probes after 60 s idle, as undici's own connector sets them.
   */
  connector(options: { alpn?: readonly string[]; header?: Buffer | undefined }): buildConnector.connector {
    const dialOptions: DialOptions = { alpn: options.alpn, header: options.header }
    return (_request, callback) => {
      this.dial(dialOptions, (err, socket) => {
        if (err) {
          const code = (err as { code?: string }).code
          callback(code === "PC_BACKEND_CONNECT_TIMEOUT" ? new errors.ConnectTimeoutError(err.message) : err, null)
          return
        }
        socket!.setKeepAlive(true, 60_000)
        callback(null, socket!)
      })
    }
  }

  /** #secureContext is built on the first TLS dial (a bad PEM fails that dial, as before, not the generation). */
  #secureContext(): tls.SecureContext {
    if (this.#context === undefined) {
      const m = this.#material!
      this.#context = tls.createSecureContext({ ca: m.ca, cert: m.cert, key: m.key })
      this.#material = undefined
    }
    return this.#context
  }
}
