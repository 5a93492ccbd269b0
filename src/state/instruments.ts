/**
 * @module instruments: every metric family Portcullis counts, and the per-listener, per-address and per-upstream
 * handle sets a generation resolves once when it is built (the hot path then only calls inc()).
 */
import { Counter, type Family, type Histogram, MetricsRegistry } from "./registry.ts"

/**
 * HandshakeFailureReason: why a TLS handshake did not complete, from the OpenSSL error the listener saw
 * (classifyHandshakeError in tls-listener.ts). A fixed set, so the label stays bounded.
 */
export type HandshakeFailureReason =
  | "no_shared_cipher"
  | "no_shared_version"
  | "unknown_sni"
  | "client_cert_missing"
  | "client_cert_bad"
  | "peer_refused_certificate"
  | "timeout"
  | "not_tls"
  | "reset"
  | "other"

/**
 * CertificateEvent: what happened to a certificate outside a handshake: an OCSP answer fetched, a fetch that failed,
 * a `revoked` answer, a self-check after a swap that found the intended leaf served or another one.
 */
export type CertificateEvent =
  | "ocsp_fetched"
  | "ocsp_failed"
  | "ocsp_revoked"
  | "self_check_ok"
  | "self_check_mismatch"
  | "self_check_failed"

/** ListenerCounters: one TLS listener's counts (by listener name), shown in its /status entry. */
export interface ListenerCounters {
  accepted: Counter
  /** Every completed handshake of the listener (the /status total; /metrics has them by version and cipher). */
  handshakes: Counter
  /** Every failed handshake of the listener (the /status total; /metrics has them by reason). */
  handshakeErrors: Counter
  proxyHeaderErrors: Counter
  /** handshake counts one completed handshake under its version, cipher and full/resumed series. */
  handshake(version: string, cipher: string, resumed: boolean): void
  /** failure counts one failed handshake under its reason. */
  failure(reason: HandshakeFailureReason): void
  handshakeDuration: Histogram
  /** Handshakes with an SNI name no certificate of the listener covers (served the default certificate). */
  unknownSni: Counter
  /** TLS bytes read from and written to clients, added when each connection closes. */
  receivedBytes: Counter
  sentBytes: Counter
}

/** HandshakeFailure: one entry of the recent-failures log (GET /tls/failures on the admin API). */
export interface HandshakeFailure {
  time: string
  listener: string
  reason: HandshakeFailureReason
  /** The SNI name the ClientHello carried, when it was read. */
  sni: string | undefined
  client: string
  /** OpenSSL's error code or message (never key material). */
  error: string | undefined
}

/** FailureLog keeps the last `size` handshake failures, oldest overwritten first (bounded memory). */
export class FailureLog {
  readonly size: number
  readonly #entries: HandshakeFailure[] = []
  #next = 0

  constructor(size = 100) {
    this.size = size
  }

  add(entry: HandshakeFailure): void {
    if (this.#entries.length < this.size) this.#entries.push(entry)
    else this.#entries[this.#next] = entry
    this.#next = (this.#next + 1) % this.size
  }

  /** recent lists the entries newest first. */
  recent(): HandshakeFailure[] {
    const n = this.#entries.length
    const out: HandshakeFailure[] = []
    for (let i = 1; i <= n; i++) out.push(this.#entries[(this.#next - i + n) % n]!)
    return out
  }
}

/** The request methods counted by name; any other is counted as "other" (bounded labels). */
const METHODS: readonly string[] = ["GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"]
const STATUS_CLASSES = ["0xx", "1xx", "2xx", "3xx", "4xx", "5xx"] as const

/**
 * RouteMeter: one route's request instruments, resolved once per generation so a request only indexes arrays:
 * requests by method and status class, time to first byte and total duration.
 */
export class RouteMeter {
  readonly #family: Family<Counter>
  readonly #labels: readonly [string, string, string]
  /** [method index * 6 + status class], made on first use. */
  readonly #requests: (Counter | undefined)[] = new Array((METHODS.length + 1) * STATUS_CLASSES.length)
  readonly firstByte: Histogram
  readonly duration: Histogram
  readonly #retries: Family<Counter>

  constructor(
    family: Family<Counter>,
    labels: [string, string, string],
    firstByte: Histogram,
    duration: Histogram,
    retries: Family<Counter>,
  ) {
    this.#family = family
    this.#labels = labels
    this.firstByte = firstByte
    this.duration = duration
    this.#retries = retries
  }

  /** retried counts a try on `backend` that failed and went to another backend (rare: a lookup is fine here). */
  retried(backend: string): void {
    this.#retries.child(this.#labels[2], backend).inc()
  }

  /** request counts one finished request; status 0 (no response) counts as class "0xx". */
  request(method: string | undefined, status: number): void {
    let m = METHODS.length
    for (let i = 0; i < METHODS.length; i++) {
      if (METHODS[i] === method) {
        m = i
        break
      }
    }
    let c = Math.floor(status / 100)
    if (!(c >= 0 && c <= 5)) c = 0
    const slot = m * STATUS_CLASSES.length + c
    let counter = this.#requests[slot]
    if (counter === undefined) {
      const [listener, route, upstream] = this.#labels
      counter = this.#family.child(listener, route, upstream, STATUS_CLASSES[c]!, METHODS[m] ?? "other")
      this.#requests[slot] = counter
    }
    counter.inc()
  }
}

/** SocketCounters: one bound address's counts (the listening socket outlives generations). */
export interface SocketCounters {
  /** Connections closed at accept because the address held max_connections. */
  refused: Counter
}

/** UpstreamCounters: one upstream's counts (by upstream name), shown as its /status `stats`. */
export interface UpstreamCounters {
  retries: Counter
  queued: Counter
  queueFull: Counter
  queueTimeouts: Counter
  ejections: Counter
  /** tcp connections closed at once because every backend was at max_connections. */
  tcpRejected: Counter
  /** Backend connect times (TCP, PROXY header, TLS) of proxied traffic. */
  connectDuration: Histogram
  /** backendError counts one failure a backend caused (connect, timeout, reset, tls, protocol, 5xx): the error path. */
  backendError(backend: string, kind: string): void
}

/** ClientGateCounters: one listener address's per-client refusals. */
export interface ClientGateCounters {
  refusedConnections: Counter
  refusedRequests: Counter
}

/** AcmeCertificateEvent: what happened to an ACME certificate (a bounded label). */
export type AcmeCertificateEvent = "issued" | "renewed" | "failed"
/** OnDemandResult: how an on-demand TLS request for a name ended (a bounded label). */
export type OnDemandResult = "issued" | "denied" | "rate_limited" | "busy" | "failed"

/** AcmeCounters: certificate events of the ACME manager, and on-demand decisions. */
export interface AcmeCounters {
  event(event: AcmeCertificateEvent): void
  onDemand(result: OnDemandResult): void
}

/** Instruments declares the families on a registry and hands out handle sets by name or address. */
export class Instruments {
  readonly registry: MetricsRegistry
  readonly #accepted
  readonly #proxyHeaderErrors
  readonly #socketRefused
  readonly #retries
  readonly #queued
  readonly #queueFull
  readonly #queueTimeouts
  readonly #ejections
  readonly #tcpRejected
  readonly #clientRefusedConnections
  readonly #clientRefusedRequests
  readonly #handshakesBy
  readonly #failuresBy
  readonly #handshakeDuration
  readonly #unknownSni
  readonly #receivedBytes
  readonly #sentBytes
  readonly #requests
  readonly #firstByte
  readonly #duration
  readonly #reloads
  readonly #backendRetries
  readonly #connectDuration
  readonly #certificateEvents
  readonly #acmeEvents
  readonly #onDemand
  readonly #backendErrors
  /** Per-listener totals for /status, by name (not exported: /metrics has the labelled families). */
  readonly #totals = new Map<string, { handshakes: Counter; errors: Counter }>()
  /** The last 100 handshake failures of every listener (GET /tls/failures). */
  readonly failures = new FailureLog(100)

  constructor(registry: MetricsRegistry) {
    this.registry = registry
    const listener = { labels: ["listener"] }
    const address = { labels: ["address"] }
    const upstream = { labels: ["upstream"] }
    const r = registry
    this.#accepted = r.counter("portcullis_listener_connections_total", "TCP connections accepted", listener)
    this.#handshakesBy = r.counter("portcullis_tls_handshakes_total", "TLS handshakes completed", {
      labels: ["listener", "version", "cipher", "handshake"],
    })
    this.#failuresBy = r.counter(
      "portcullis_tls_handshake_failures_total",
      "TLS handshakes that failed, timed out or were refused, by reason",
      { labels: ["listener", "reason"] },
    )
    this.#handshakeDuration = r.histogram(
      "portcullis_tls_handshake_duration_seconds",
      "from accept to a completed handshake (PROXY header and ClientHello peek included)",
      listener,
    )
    this.#unknownSni = r.counter(
      "portcullis_tls_unknown_sni_total",
      "handshakes whose SNI name no certificate covers (the default certificate was served)",
      listener,
    )
    this.#receivedBytes = r.counter(
      "portcullis_listener_received_bytes_total",
      "TLS bytes read from clients (counted when a connection closes)",
      listener,
    )
    this.#sentBytes = r.counter(
      "portcullis_listener_sent_bytes_total",
      "TLS bytes written to clients (counted when a connection closes)",
      listener,
    )
    const route = { labels: ["listener", "route", "upstream"] }
    this.#requests = r.counter("portcullis_http_requests_total", "HTTP requests proxied, by status class and method", {
      labels: ["listener", "route", "upstream", "status_class", "method"],
    })
    this.#firstByte = r.histogram(
      "portcullis_http_first_byte_seconds",
      "from the request's arrival to the backend's response head",
      route,
    )
    this.#duration = r.histogram(
      "portcullis_http_request_duration_seconds",
      "from the request's arrival to the end of the exchange",
      route,
    )
    this.#connectDuration = r.histogram(
      "portcullis_backend_connect_duration_seconds",
      "time to open a backend connection (TCP, PROXY header and TLS handshake)",
      upstream,
    )
    this.#backendRetries = r.counter(
      "portcullis_backend_retries_total",
      "tries that failed on this backend and were sent to another one",
      { labels: ["upstream", "backend"] },
    )
    this.#certificateEvents = r.counter(
      "portcullis_tls_certificate_events_total",
      "certificate events: OCSP answers fetched, fetches failed, revoked answers, self-checks after a swap",
      // name: the certificate's first name, from the operator's files (never client input): bounded.
      { labels: ["name", "event"], maxSeries: 600 },
    )
    this.#backendErrors = r.counter(
      "portcullis_backend_errors_total",
      "tries a backend failed (connect, timeout, reset, tls, protocol) or answered with a 5xx, by kind",
      { labels: ["upstream", "backend", "kind"] },
    )
    this.#reloads = r.counter("portcullis_config_reloads_total", "config reloads, by result", { labels: ["result"] })
    this.#proxyHeaderErrors = r.counter(
      "portcullis_proxy_protocol_errors_total",
      "PROXY protocol headers refused (malformed, late or from an untrusted peer)",
      listener,
    )
    this.#socketRefused = r.counter(
      "portcullis_listener_refused_connections_total",
      "connections closed at accept because the address held max_connections",
      address,
    )
    this.#retries = r.counter("portcullis_upstream_retries_total", "requests retried on another backend", upstream)
    this.#queued = r.counter("portcullis_upstream_queued_total", "requests that waited for a backend slot", upstream)
    this.#queueFull = r.counter(
      "portcullis_upstream_queue_full_total",
      "requests refused because the wait queue was full",
      upstream,
    )
    this.#queueTimeouts = r.counter(
      "portcullis_upstream_queue_timeouts_total",
      "requests that waited queue.timeout in vain",
      upstream,
    )
    this.#ejections = r.counter("portcullis_upstream_ejections_total", "backends ejected by passive health", upstream)
    this.#tcpRejected = r.counter(
      "portcullis_upstream_tcp_rejected_total",
      "tcp connections closed because every backend was at max_connections",
      upstream,
    )
    this.#clientRefusedConnections = r.counter(
      "portcullis_client_refused_connections_total",
      "connections refused by per_client_connections",
      address,
    )
    this.#acmeEvents = r.counter(
      "portcullis_acme_certificates_total",
      "ACME certificate events: issued (first certificate for names), renewed, failed (an order that failed)",
      { labels: ["event"] },
    )
    this.#onDemand = r.counter("portcullis_acme_on_demand_total", "on-demand TLS requests for a name, by result", {
      labels: ["result"],
    })
    this.#clientRefusedRequests = r.counter(
      "portcullis_client_refused_requests_total",
      "requests refused by the per-client rate limit",
      address,
    )
  }

  listener(name: string): ListenerCounters {
    let totals = this.#totals.get(name)
    if (!totals) {
      totals = { handshakes: new Counter(), errors: new Counter() }
      this.#totals.set(name, totals)
    }
    const { handshakes, errors } = totals
    const by = this.#handshakesBy
    const failuresBy = this.#failuresBy
    // Resolved per (version, cipher) on first use, kept in nested maps so a handshake builds no key string: a
    // listener sees only a handful of versions and ciphers.
    const seen = new Map<string, Map<string, [full: Counter, resumed: Counter]>>()
    return {
      accepted: this.#accepted.child(name),
      handshakes,
      handshakeErrors: errors,
      proxyHeaderErrors: this.#proxyHeaderErrors.child(name),
      handshake(version, cipher, resumed) {
        handshakes.inc()
        let byCipher = seen.get(version)
        if (byCipher === undefined) {
          byCipher = new Map()
          seen.set(version, byCipher)
        }
        let pair = byCipher.get(cipher)
        if (pair === undefined) {
          pair = [by.child(name, version, cipher, "full"), by.child(name, version, cipher, "resumed")]
          byCipher.set(cipher, pair)
        }
        pair[resumed ? 1 : 0].inc()
      },
      failure(reason) {
        errors.inc()
        failuresBy.child(name, reason).inc()
      },
      handshakeDuration: this.#handshakeDuration.child(name),
      unknownSni: this.#unknownSni.child(name),
      receivedBytes: this.#receivedBytes.child(name),
      sentBytes: this.#sentBytes.child(name),
    }
  }

  /** route resolves one route's request instruments (route: its index in the listener's routes, "routes[0]"). */
  route(listener: string, route: string, upstream: string): RouteMeter {
    return new RouteMeter(
      this.#requests,
      [listener, route, upstream],
      this.#firstByte.child(listener, route, upstream),
      this.#duration.child(listener, route, upstream),
      this.#backendRetries,
    )
  }

  /** certificateEvent counts one event of the certificate named `name` (its first name). */
  certificateEvent(name: string, event: CertificateEvent): void {
    this.#certificateEvents.child(name, event).inc()
  }

  /** reload counts one reload by its result. */
  reload(ok: boolean): void {
    this.#reloads.child(ok ? "ok" : "failed").inc()
  }

  socket(address: string): SocketCounters {
    return { refused: this.#socketRefused.child(address) }
  }

  upstream(name: string): UpstreamCounters {
    const errors = this.#backendErrors
    return {
      retries: this.#retries.child(name),
      queued: this.#queued.child(name),
      queueFull: this.#queueFull.child(name),
      queueTimeouts: this.#queueTimeouts.child(name),
      ejections: this.#ejections.child(name),
      tcpRejected: this.#tcpRejected.child(name),
      connectDuration: this.#connectDuration.child(name),
      backendError: (backend, kind) => errors.child(name, backend, kind).inc(),
    }
  }

  /** acme: the ACME manager's counters (labels from fixed sets only). */
  acme(): AcmeCounters {
    const events = this.#acmeEvents
    const onDemand = this.#onDemand
    return {
      event: (event) => events.child(event).inc(),
      onDemand: (result) => onDemand.child(result).inc(),
    }
  }

  clientGate(address: string): ClientGateCounters {
    return {
      refusedConnections: this.#clientRefusedConnections.child(address),
      refusedRequests: this.#clientRefusedRequests.child(address),
    }
  }
}

/** detachedInstruments gives handle sets counted nowhere else: for parts built alone (unit tests, tools). */
export function detachedInstruments(): Instruments {
  return new Instruments(new MetricsRegistry())
}
