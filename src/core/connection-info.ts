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
}

const kInfo = Symbol("portcullis.connection")
const kSocket = Symbol("portcullis.connection.socket")

type WithInfo = { [kInfo]?: ConnectionInfo }
type WithSocket = { [kSocket]?: TLSSocket }

/** attachInfo stores the connection's info on its socket (and the socket on the info, for socketOf). */
export function attachInfo(socket: TLSSocket, info: ConnectionInfo): void {
  ;(socket as unknown as WithInfo)[kInfo] = info
  // A symbol key: never serialised into logs or the admin API.
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

/** readConnectionInfo reads what the handshake negotiated; called once per connection. */
export function readConnectionInfo(
  socket: TLSSocket,
  listener: string,
  options: {
    source?: ProxiedSource
    isTrusted: (address: string) => boolean
    clientAuth: boolean
    forwardCert?: boolean
    forwardFormat?: ForwardFormat
  },
): ConnectionInfo {
  const peerAddress = unmapIPv4(socket.remoteAddress)
  const clientAddress = options.source ? unmapIPv4(options.source.address) : peerAddress
  const cipher = socket.getCipher()
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
  // The local end is read on first use (getsockname(2)): only a PROXY header to a backend needs it.
  let local: { address: string; port: number } | undefined
  const localEnd = () => {
    local ??= { address: unmapIPv4(socket.localAddress), port: socket.localPort ?? 0 }
    return local
  }
  return {
    listener,
    clientAddress,
    clientPort: options.source ? options.source.port : (socket.remotePort ?? 0),
    peerAddress,
    get localAddress() {
      return localEnd().address
    },
    get localPort() {
      return localEnd().port
    },
    servername: typeof socket.servername === "string" ? socket.servername : "",
    tlsVersion: socket.getProtocol() ?? "",
    cipher: cipher?.standardName ?? cipher?.name ?? "",
    alpn: typeof socket.alpnProtocol === "string" ? socket.alpnProtocol : "",
    trusted: options.isTrusted(clientAddress),
    clientAuth: options.clientAuth,
    forwardCert: options.forwardCert ?? false,
    forwardFormat: options.forwardFormat ?? "x-client",
    clientCert,
  }
}
