/** @module tls-listener: a listener's TLS side for one generation: PROXY header in, handshake, then the engine. */
import type net from "node:net"
import tls, { type TLSSocket } from "node:tls"
import type { ListenerConfig } from "../config/schema.ts"
import { unmapIPv4 } from "../core/address.ts"
import { attachInfo, type ProxiedSource, readConnectionInfo } from "../core/connection-info.ts"
import { errorMessage } from "../core/errors.ts"
import type { Logger } from "../core/log.ts"
import {
  detachedInstruments,
  type FailureLog,
  type HandshakeFailureReason,
  type ListenerCounters,
} from "../state/instruments.ts"
import type { CertPick } from "../tls/cert-pick.ts"
import type { CertStore, ClientAuthPolicy, LoadedCertificate } from "../tls/cert-store.ts"
import type { ClientCensus, ListenerCensus } from "../tls/client-census.ts"
import type { HelloScan } from "../tls/client-hello.ts"
import type { Staple } from "../tls/ocsp/stapler.ts"
import { censusPolicies } from "../tls/policy-offer.ts"
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
/** When the connection was accepted (performance.now()), and why its handshake failed once that is known. */
const kStart = Symbol("portcullis.acceptedAt")
const kReason = Symbol("portcullis.failureReason")
type WithSource = {
  [kSource]?: ProxiedSource
  [kDeadline]?: ReturnType<typeof setTimeout>
  [kTls]?: TLSSocket
  [kServed]?: Served
  [kStart]?: number
  [kReason]?: HandshakeFailureReason
  [kError]?: string
}
const kError = Symbol("portcullis.failureError")
/** net.Socket's cache of getpeername(2) (lib/net.js _getpeername): a Node internal, read and set in #wrap. */
type Peername = { _peername?: object }

/** Served: how the sockets of one SecureContext are built and judged (its client_auth policy). */
interface Served {
  options: tls.TLSSocketOptions
  /**
   * The context's ALPN list in wire form, set on each socket's handle (#wrap) rather than passed as ALPNProtocols:
   * TLSSocket copies and validates a list it is given on every construction (convertALPNProtocols, ≈0.3% of a W5
   * profile); the handle's setter copies the bytes into the TLSWrap itself, as the constructor's own call does.
   */
  alpn: Buffer | undefined
  auth: ClientAuthPolicy
  /** the OCSP staple of the context's one certificate (an ECDSA+RSA context has `pick` instead) */
  staple: Staple | undefined
  /**
   * An ECDSA+RSA context with a staple kept for either: which certificate OpenSSL will serve is predicted from the
   * ClientHello (cert-pick.ts), and that one's staple is set; `picked` holds the staples in CertPick.certs order.
   */
  pick?: CertPick | undefined
  picked?: readonly (Staple | undefined)[] | undefined
  /** a tls-alpn-01 validation handshake (RFC 8737): closed once done, never handed to the engine */
  challenge?: boolean
}

/**
 * A fatal unrecognized_name alert (RFC 8446 §6, RFC 6066 §3) as a plaintext record: what a name still waiting for
 * its first ACME certificate gets with acme.while_pending: refuse.
 */
const UNRECOGNIZED_NAME_ALERT = Buffer.from([0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x70])

/** TlsListenerOptions: what is measured on the accept path (config `metrics`). */
export interface TlsListenerOptions {
  /** false: no per-version/cipher handshake series, no handshake histogram, no byte counts (default true) */
  metrics?: boolean
  /** the listener's ClientHello census (kept by the runtime across generations); absent: no census */
  census?: ClientCensus | undefined
  /** on a single-context listener, peek 1 in this many ClientHellos for the census (default 1: each) */
  censusSample?: number
  /** the OCSP staples of the listener's certificates (the runtime's stapler); absent: no stapling */
  staples?: StapleLookup | undefined
}

/**
 * The TLSWrap handle's setters used before the handshake: the staple (what tls.Server's 'OCSPRequest' callback calls,
 * _tls_wrap.js requestOCSP) and the ALPN list (what TLSSocket's _init calls with options.ALPNProtocols).
 */
type ServerHandle = { setOCSPResponse(der: Buffer): void; setALPNProtocols(protocols: Buffer): void }

/** StapleLookup gives the OCSP staple kept for a certificate, if any (the runtime's OcspStapler). */
export type StapleLookup = (cert: LoadedCertificate) => Staple | undefined

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
  readonly #onClosed: (this: TLSSocket) => void
  readonly #onPeeked: (raw: net.Socket, hello: HelloScan) => void
  readonly #failures: FailureLog | undefined
  readonly #staples: StapleLookup | undefined
  readonly #metrics: boolean
  readonly #census: ClientCensus | undefined
  readonly #censusSample: number
  /** Connections since the census last peeked one (single-context listeners sample). */
  #unsampled = 0

  constructor(
    config: ListenerConfig,
    certs: CertStore,
    engine: Engine,
    log: Logger,
    stats?: ListenerCounters,
    failures?: FailureLog,
    options: TlsListenerOptions = {},
  ) {
    this.#metrics = options.metrics ?? true
    this.#census = options.census
    this.#censusSample = options.censusSample ?? 1
    // The first connection is sampled, so a fresh listener's census is not empty for long.
    this.#unsampled = this.#censusSample - 1
    this.config = config
    this.#staples = options.staples
    this.stats = stats ?? detachedInstruments().listener(config.name)
    this.certs = certs
    this.engine = engine
    this.#log = log
    this.#failures = failures
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
      const raw = endHandshake(this)
      listener.#countFailure(raw, this, raw?.[kReason] ?? "reset")
    }
    this.#onPeeked = (raw, hello) => listener.#peeked(raw, hello)
    // A served connection's TLS bytes, counted once at its close (no per-read cost).
    this.#onClosed = function (this: TLSSocket) {
      const raw = (this as unknown as { _parent?: net.Socket })._parent
      if (!raw) return
      listener.stats.receivedBytes.inc(raw.bytesRead)
      listener.stats.sentBytes.inc(raw.bytesWritten)
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
    if (this.#metrics) (raw as WithSource)[kStart] = performance.now()
    // Read (and so cache) the peer address now: a failed handshake's entry in the failures log needs it after the
    // handle is gone; a served connection reads it anyway (readConnectionInfo).
    void raw.remoteAddress
    // The whole handshake, ClientHello peek included, must finish within handshake_timeout: a deadline, not an
    // idle timer, so a client trickling bytes cannot hold the connection open.
    ;(raw as WithSource)[kDeadline] = setTimeout(() => expireHandshake(raw), this.#handshakeTimeout)
    // One context needs no peek for SNI. The census, when on, peeks there too, but only 1 in censusSample
    // connections: the peek (flowing mode, unshift, a promise) costs a full handshake about a fifth more CPU.
    // An ECDSA+RSA context with OCSP staples needs the ClientHello to tell which certificate's staple to set.
    if (this.certs.single) {
      const context = this.certs.contextFor(undefined)
      const served = this.#servedBy(context)
      if (served.pick === undefined && (this.#census === undefined || ++this.#unsampled < this.#censusSample)) {
        this.#wrap(raw, context, undefined, served)
        return
      }
    }
    this.#unsampled = 0
    // No timer of the peek's own: the deadline above closes the socket, which ends the peek (and #peeked then
    // finds the socket destroyed and counts the failure under the deadline's reason).
    this.certs.peekThen(raw, 0, this.#census, this.#onPeeked)
  }

  /** peeked: the ClientHello was read (or the socket stopped before it was): start the handshake on its context. */
  #peeked(raw: net.Socket, hello: HelloScan): void {
    try {
      const context = this.certs.contextForHello(hello)
      if (context instanceof Promise) void context.then((c) => this.#wrap(raw, c, hello.hello))
      else this.#wrap(raw, context, hello.hello)
    } catch (err) {
      // Reading the ClientHello or choosing its context failed: the bytes were not a usable ClientHello.
      const w = raw as net.Socket & WithSource
      clearTimeout(w[kDeadline])
      const reason = w[kReason] ?? (raw.destroyed || raw.readableEnded ? "reset" : peekReason(err))
      this.#countFailure(w, undefined, reason, errorMessage(err))
      raw.destroy()
    }
  }

  /** wrap starts the handshake on `secureContext`; `hello` is the peeked ClientHello body, if it was peeked. */
  #wrap(raw: net.Socket, secureContext: tls.SecureContext, hello: Buffer | undefined, known?: Served): void {
    if (raw.destroyed) {
      const w = raw as net.Socket & WithSource
      clearTimeout(w[kDeadline])
      this.#countFailure(w, undefined, w[kReason] ?? "reset")
      return
    }
    if (this.certs.refuses(secureContext)) {
      const w = raw as net.Socket & WithSource
      clearTimeout(w[kDeadline])
      this.#countFailure(w, undefined, "unknown_sni", "acme certificate pending (while_pending: refuse)")
      raw.end(UNRECOGNIZED_NAME_ALERT)
      raw.destroySoon()
      return
    }
    const served = known ?? this.#servedBy(secureContext)
    const socket = new tls.TLSSocket(raw, served.options)
    const handle = (socket as unknown as { ssl: ServerHandle }).ssl
    // Before the first read (next tick), as the constructor would have set it.
    if (served.alpn !== undefined) handle.setALPNProtocols(served.alpn)
    // OCSP stapling on a TLSSocket made without tls.Server: the TLSWrap keeps one response, and OpenSSL's status
    // callback (set on every server context by Node's TLSWrap) sends it only to a client whose ClientHello asked
    // (status_request, RFC 6066 §8). The socket reads on the next tick, so this precedes the ClientHello. Node takes
    // it before OpenSSL picks between an ECDSA and an RSA certificate: for such a context the pick is predicted, and
    // when the prediction is unsure nothing is stapled (a staple for the other certificate fails strict clients).
    let der = served.staple?.der
    if (served.pick !== undefined && hello !== undefined) {
      const i = served.pick.pick(hello)
      der = i < 0 ? undefined : served.picked![i]?.der
    }
    if (der !== undefined) handle.setOCSPResponse(der)
    ;(raw as WithSource)[kTls] = socket
    ;(raw as WithSource)[kServed] = served
    // The peer address read at accept (#handshake) serves the TLS socket too: net.Socket keeps it in _peername and
    // reads it with getpeername(2) only while that is unset, so readConnectionInfo costs no second system call.
    const peer = (raw as unknown as Peername)._peername
    if (peer !== undefined) (socket as unknown as Peername)._peername = peer
    // 'secure' and 'close' come once per socket: on(), not once(), which would make a wrapper closure per call.
    socket.on("secure", this.#onSecure)
    // Until control is released, Node reports handshake failures as '_tlsError', as tls.Server listens for them.
    socket.on("_tlsError", this.#onHandshakeError)
    socket.on("close", this.#onEarlyClose)
  }

  /** servedBy builds, once per context, the socket options its client_auth policy calls for. */
  #servedBy(secureContext: tls.SecureContext): Served {
    let served = this.#served.get(secureContext)
    if (!served && this.certs.isChallenge(secureContext)) {
      served = {
        auth: { mode: "none", forwardCert: false, forwardFormat: "x-client" },
        options: { isServer: true, secureContext },
        alpn: wireAlpn(["acme-tls/1"]),
        staple: undefined,
        challenge: true,
      }
      this.#served.set(secureContext, served)
    }
    if (!served) {
      const auth = this.certs.clientAuthOf(secureContext)
      // One response per handshake, set before OpenSSL picks between an ECDSA and an RSA certificate of the
      // context: for those the listener predicts the pick from the ClientHello (#wrap); other mixes get no staple.
      const members = this.certs.certificatesOf(secureContext)
      const staple = this.#staples && members.length === 1 ? this.#staples(members[0]!) : undefined
      const pick = this.#staples && members.length > 1 ? this.certs.certPickOf(secureContext) : undefined
      const picked = pick ? pick.certs.map((c) => this.#staples!(c)) : undefined
      const stapled = picked?.some((s) => s !== undefined) === true
      served = {
        auth,
        staple,
        pick: stapled ? pick : undefined,
        picked: stapled ? picked : undefined,
        options: {
          isServer: true,
          secureContext,
          requestCert: auth.mode !== "none",
          // require: a client without a certificate fails in the handshake; a bad one is judged in #secured.
          rejectUnauthorized: auth.mode === "require",
        },
        alpn: wireAlpn(this.certs.secureOptions.ALPNProtocols as string[] | undefined),
      }
      this.#served.set(secureContext, served)
    }
    return served
  }

  #secured(socket: TLSSocket): void {
    const raw = endHandshake(socket)
    socket.off("secure", this.#onSecure)
    socket.off("_tlsError", this.#onHandshakeError)
    socket.off("close", this.#onEarlyClose)
    socket.on("error", ignore)
    if (raw?.[kServed]?.challenge) {
      // RFC 8737 §3: the validation is the handshake itself; nothing is spoken over it.
      socket.end()
      return
    }
    const auth = raw?.[kServed]?.auth ?? this.certs.clientAuthOf(this.certs.contextFor(undefined))
    if (auth.mode !== "none" && !this.#verifyClient(socket, auth.mode === "require")) {
      const reason = socket.getPeerX509Certificate() ? "client_cert_bad" : "client_cert_missing"
      this.#countFailure(raw, socket, reason, String(socket.authorizationError))
      this.#log.debug({ listener: this.config.name, err: socket.authorizationError }, "client certificate refused")
      socket.destroy()
      return
    }
    // What tls.Server does once a handshake is done: errors become 'error' events and the socket counts as open.
    ;(socket as unknown as { _releaseControl(): boolean })._releaseControl()
    ;(socket as unknown as { secureConnecting: boolean }).secureConnecting = false
    const info = readConnectionInfo(socket, this.config.name, {
      source: raw?.[kSource],
      isTrusted: this.#isTrusted,
      clientAuth: auth.mode !== "none",
      forwardCert: auth.forwardCert,
      forwardFormat: auth.forwardFormat,
    })
    const stats = this.stats
    if (this.#metrics) {
      // The version and cipher the info read (one getProtocol/getCipher per handshake, not two).
      stats.handshake(info.tlsVersion, info.cipher, socket.isSessionReused())
      const started = raw?.[kStart]
      if (started !== undefined) stats.handshakeDuration.observe((performance.now() - started) / 1000)
      const sni = info.servername
      if (sni !== "" && !this.certs.single && !this.certs.covers(sni)) stats.unknownSni.inc()
      socket.on("close", this.#onClosed)
    } else {
      stats.handshakes.inc()
    }
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
    const raw = (socket as unknown as { _parent?: net.Socket & WithSource })._parent
    if (raw && raw[kReason] === undefined) {
      raw[kReason] = classifyHandshakeError(err)
      raw[kError] = (err as NodeJS.ErrnoException).code ?? errorMessage(err)
    }
    socket.destroy()
  }

  /** countFailure counts a failed handshake under its reason and keeps it in the recent-failures log. */
  #countFailure(
    raw: (net.Socket & WithSource) | undefined,
    socket: TLSSocket | undefined,
    reason: HandshakeFailureReason,
    error?: string,
  ): void {
    this.stats.failure(reason)
    if (this.#failures === undefined) return
    const sni = socket?.servername
    const source = raw?.[kSource]
    this.#failures.add({
      time: new Date().toISOString(),
      listener: this.config.name,
      reason,
      sni: typeof sni === "string" && sni !== "" ? sni : undefined,
      client: source ? unmapIPv4(source.address) : unmapIPv4(raw?.remoteAddress ?? socket?.remoteAddress),
      error: error ?? raw?.[kError],
    })
  }

  /** close lets the engine finish in-flight work within graceMs. */
  async close(graceMs: number, closeIdle = true): Promise<void> {
    await this.engine.close(graceMs, closeIdle)
  }

  destroy(): void {
    this.engine.destroy()
  }

  /** census counts the listener's recent ClientHellos and judges them against each profile and the current policy. */
  census(): ListenerCensus | undefined {
    if (this.#census === undefined) return undefined
    const leaves = this.certs.certificates().map((c) => c.leaf)
    return this.#census.snapshot(censusPolicies(this.config.tls!, this.config.engine, this.certs.secureOptions, leaves))
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

/**
 * wireAlpn turns an ALPN list into its wire form (RFC 7301 §3.1) once per context, as tls.Server does for the
 * sockets it makes (a TLSSocket given a list converts it on every construction, one given the wire form copies and
 * validates it). Names are ASCII tokens (config schema), so one byte each.
 */
function wireAlpn(protocols: string[] | undefined): Buffer | undefined {
  if (protocols === undefined) return undefined
  return Buffer.concat(protocols.map((p) => Buffer.concat([Buffer.from([Buffer.byteLength(p)]), Buffer.from(p)])))
}

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
  raw[kReason] ??= "timeout"
  const socket = raw[kTls]
  raw[kTls] = undefined
  if (socket) socket.destroy()
  raw.destroy()
}

/**
 * classifyHandshakeError maps the OpenSSL error a server-side handshake ended with to a bounded reason. The codes
 * are Node's ERR_SSL_<OpenSSL reason> (OpenSSL's ssl_err.c reason strings, upper-cased).
 */
export function classifyHandshakeError(err: Error): HandshakeFailureReason {
  const code = (err as NodeJS.ErrnoException).code ?? ""
  switch (code) {
    case "ERR_SSL_NO_SHARED_CIPHER":
    case "ERR_SSL_NO_SHARED_GROUPS":
    case "ERR_SSL_NO_SUITABLE_SIGNATURE_ALGORITHM":
    case "ERR_SSL_NO_CIPHERS_AVAILABLE":
      return "no_shared_cipher"
    case "ERR_SSL_UNSUPPORTED_PROTOCOL":
    case "ERR_SSL_NO_PROTOCOLS_AVAILABLE":
    case "ERR_SSL_VERSION_TOO_LOW":
    case "ERR_SSL_VERSION_TOO_HIGH":
    case "ERR_SSL_TLSV1_ALERT_PROTOCOL_VERSION":
      return "no_shared_version"
    case "ERR_SSL_PEER_DID_NOT_RETURN_A_CERTIFICATE":
      return "client_cert_missing"
    case "ERR_SSL_CERTIFICATE_VERIFY_FAILED":
    case "ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED":
      return "client_cert_bad"
    case "ERR_SSL_TLSV1_UNRECOGNIZED_NAME":
    case "ERR_SSL_TLSV1_ALERT_UNRECOGNIZED_NAME":
      return "unknown_sni"
    case "ERR_SSL_SSLV3_ALERT_BAD_CERTIFICATE":
    case "ERR_SSL_TLSV1_ALERT_UNKNOWN_CA":
    case "ERR_SSL_SSLV3_ALERT_CERTIFICATE_UNKNOWN":
    case "ERR_SSL_SSLV3_ALERT_CERTIFICATE_EXPIRED":
    case "ERR_SSL_TLSV1_ALERT_DECRYPT_ERROR":
      return "peer_refused_certificate"
    case "ERR_SSL_HTTP_REQUEST":
    case "ERR_SSL_HTTPS_PROXY_REQUEST":
    case "ERR_SSL_WRONG_VERSION_NUMBER":
    case "ERR_SSL_PACKET_LENGTH_TOO_LONG":
    case "ERR_SSL_UNKNOWN_PROTOCOL":
      return "not_tls"
    case "ECONNRESET":
    case "EPIPE":
      return "reset"
    default:
      return "other"
  }
}

/** peekReason: why reading the ClientHello for its SNI name failed (its error names a timeout or bad bytes). */
function peekReason(err: unknown): HandshakeFailureReason {
  const text = `${(err as NodeJS.ErrnoException)?.code ?? ""} ${errorMessage(err)}`.toLowerCase()
  if (text.includes("timeout") || text.includes("timed out")) return "timeout"
  return "not_tls"
}
