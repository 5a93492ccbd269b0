/** @module connection-info: what we know about one client connection, read once after the handshake. */
import type { TLSSocket } from "node:tls"
import { unmapIPv4 } from "./address.ts"

/** ClientCertInfo: the client certificate a client presented (mTLS). */
export interface ClientCertInfo {
  verified: boolean
  error?: string
  subject: string
  commonName: string
  fingerprint256: string
  pem?: string
}

/** ForwardFormat: how a client certificate's identity is sent to backends (client_auth.forward_format). */
export type ForwardFormat = "x-client" | "rfc9440" | "xfcc"

/** ConnectionInfo is attached to each accepted TLS socket; engines, logs and headers read it. */
export interface ConnectionInfo {
  listener: string
  /** The client's address: the PROXY header's source when one was accepted, else the peer's. */
  clientAddress: string
  clientPort: number
  /** The peer's address (a proxy in front of us when PROXY protocol is used). */
  peerAddress: string
  localAddress: string
  localPort: number
  servername: string
  tlsVersion: string
  cipher: string
  alpn: string
  /** The client address is in the listener's trusted_proxies. */
  trusted: boolean
  /** client_auth is on for this connection's certificate (request or require). */
  clientAuth: boolean
  /** client_auth.forward_cert: send the client certificate PEM in X-Client-Cert. */
  forwardCert: boolean
  /** client_auth.forward_format; absent means x-client. */
  forwardFormat?: ForwardFormat
  clientCert: ClientCertInfo | undefined
  /**
   * Strings the connection's readers make once and reuse for each of its requests: the access line's connection
   * part (for `lineListener`) and the Forwarded element (for `forwardedHost`). Undefined until made. Slots of the
   * record, not WeakMap entries (a WeakMap set per connection, and its ephemeron in every scavenge) nor properties
   * added later (which would give records a second shape and turn their readers polymorphic).
   */
  linePart: string | undefined
  lineListener: string | undefined
  forwardedElement: string | undefined
  forwardedHost: string | undefined
}

const kInfo = Symbol("portcullis.connection")
const kSocket = Symbol("portcullis.connection.socket")

type WithInfo = { [kInfo]?: ConnectionInfo }
type WithSocket = { [kSocket]?: TLSSocket | undefined }

/** attachInfo stores the connection's info on its socket (and the socket on the info, for socketOf). */
export function attachInfo(socket: TLSSocket, info: ConnectionInfo): void {
  ;(socket as unknown as WithInfo)[kInfo] = info
  // A symbol key: never serialised into logs or the admin API (a ConnectionRecord has the slot from the start).
  ;(info as WithSocket)[kSocket] = socket
}

/** infoOf reads the info back (HTTP/2 request sockets forward property reads to the TLS socket). */
export function infoOf(socket: unknown): ConnectionInfo | undefined {
  return (socket as WithInfo | undefined)?.[kInfo]
}

/** socketOf is the client's TLS socket an info was read from (undefined for infos made without attachInfo). */
export function socketOf(info: ConnectionInfo): TLSSocket | undefined {
  return (info as WithSocket)[kSocket]
}

/** proxiedSource is the client address and port a PROXY header gave, if any. */
export interface ProxiedSource {
  address: string
  port: number
}

/**
 * ConnectionRecord is the ConnectionInfo readConnectionInfo makes: one class, so every connection's record has one
 * shape from its construction (the memo slots and the socket slot included) and costs no closure or accessor of its
 * own. An object literal with `get localAddress()` defined its two accessors on every connection (V8's
 * DefineAccessorPropertyUnchecked, ≈0.4% of a W5 profile) and captured a closure for them. The fields are `declare`d
 * and assigned in the constructor: plain stores, where class field definitions (and private fields) are defines.
 */
class ConnectionRecord implements ConnectionInfo {
  declare readonly listener: string
  declare readonly clientAddress: string
  declare readonly clientPort: number
  declare readonly peerAddress: string
  declare readonly servername: string
  declare readonly tlsVersion: string
  declare readonly cipher: string
  declare readonly alpn: string
  declare readonly trusted: boolean
  declare readonly clientAuth: boolean
  declare readonly forwardCert: boolean
  declare readonly forwardFormat: ForwardFormat
  declare readonly clientCert: ClientCertInfo | undefined
  declare linePart: string | undefined
  declare lineListener: string | undefined
  declare forwardedElement: string | undefined
  declare forwardedHost: string | undefined
  /** The TLS socket (socketOf reads it). A symbol key: never serialised into logs or the admin API. */
  declare [kSocket]: TLSSocket | undefined
  /** The local end, read on first use (getsockname(2)): only a PROXY header to a backend needs it. */
  declare localEnd: { address: string; port: number } | undefined

  constructor(
    socket: TLSSocket,
    listener: string,
    options: ConnectionInfoOptions,
    peerAddress: string,
    clientCert: ClientCertInfo | undefined,
  ) {
    const source = options.source
    const cipher = socket.getCipher()
    const clientAddress = source ? unmapIPv4(source.address) : peerAddress
    this.listener = listener
    this.clientAddress = clientAddress
    this.clientPort = source ? source.port : (socket.remotePort ?? 0)
    this.peerAddress = peerAddress
    this.servername = typeof socket.servername === "string" ? socket.servername : ""
    this.tlsVersion = socket.getProtocol() ?? ""
    this.cipher = cipher?.standardName ?? cipher?.name ?? ""
    this.alpn = typeof socket.alpnProtocol === "string" ? socket.alpnProtocol : ""
    this.trusted = options.isTrusted(clientAddress)
    this.clientAuth = options.clientAuth
    this.forwardCert = options.forwardCert ?? false
    this.forwardFormat = options.forwardFormat ?? "x-client"
    this.clientCert = clientCert
    this.linePart = undefined
    this.lineListener = undefined
    this.forwardedElement = undefined
    this.forwardedHost = undefined
    this[kSocket] = socket
    this.localEnd = undefined
  }

  get localAddress(): string {
    return localEndOf(this).address
  }

  get localPort(): number {
    return localEndOf(this).port
  }

  /** What JSON.stringify shows (the admin API, a debug log): the fields, the local end read as a getter would. */
  toJSON(): Record<string, unknown> {
    return {
      listener: this.listener,
      clientAddress: this.clientAddress,
      clientPort: this.clientPort,
      peerAddress: this.peerAddress,
      localAddress: this.localAddress,
      localPort: this.localPort,
      servername: this.servername,
      tlsVersion: this.tlsVersion,
      cipher: this.cipher,
      alpn: this.alpn,
      trusted: this.trusted,
      clientAuth: this.clientAuth,
      forwardCert: this.forwardCert,
      forwardFormat: this.forwardFormat,
      clientCert: this.clientCert,
    }
  }
}

/** localEndOf reads a record's local end once (a function, not a private method: those brand every instance). */
function localEndOf(record: ConnectionRecord): { address: string; port: number } {
  let local = record.localEnd
  if (local === undefined) {
    const socket = record[kSocket]
    local = { address: unmapIPv4(socket?.localAddress), port: socket?.localPort ?? 0 }
    record.localEnd = local
  }
  return local
}

/** ConnectionInfoOptions: what the listener knows beside the socket (PROXY header, trusted proxies, client_auth). */
export interface ConnectionInfoOptions {
  source?: ProxiedSource | undefined
  isTrusted: (address: string) => boolean
  clientAuth: boolean
  forwardCert?: boolean
  forwardFormat?: ForwardFormat
}

/** readConnectionInfo reads what the handshake negotiated; called once per connection. */
export function readConnectionInfo(
  socket: TLSSocket,
  listener: string,
  options: ConnectionInfoOptions,
): ConnectionInfo {
  const peerAddress = unmapIPv4(socket.remoteAddress)
  let clientCert: ClientCertInfo | undefined
  if (options.clientAuth) {
    const peer = socket.getPeerX509Certificate()
    if (peer) {
      const error = socket.authorizationError
      clientCert = {
        verified: socket.authorized,
        error: error
          ? String(error instanceof Error ? ((error as NodeJS.ErrnoException).code ?? error.message) : error)
          : undefined,
        subject: peer.subject.replace(/\n/g, ","),
        commonName: /(?:^|\n)CN=([^\n]*)/.exec(peer.subject)?.[1] ?? "",
        fingerprint256: peer.fingerprint256,
        pem: peer.toString(),
      }
    }
  }
  return new ConnectionRecord(socket, listener, options, peerAddress, clientCert)
}
