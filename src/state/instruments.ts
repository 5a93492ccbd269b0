/**
 * @module instruments: every metric family Portcullis counts, and the per-listener, per-address and per-upstream
 * handle sets a generation resolves once when it is built (the hot path then only calls inc()).
 */
import { type Counter, MetricsRegistry } from "./registry.ts"

/** ListenerCounters: one TLS listener's counts (by listener name), shown in its /status entry. */
export interface ListenerCounters {
  accepted: Counter
  handshakes: Counter
  handshakeErrors: Counter
  proxyHeaderErrors: Counter
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
}

/** ClientGateCounters: one listener address's per-client refusals. */
export interface ClientGateCounters {
  refusedConnections: Counter
  refusedRequests: Counter
}

/** Instruments declares the families on a registry and hands out handle sets by name or address. */
export class Instruments {
  readonly registry: MetricsRegistry
  readonly #accepted
  readonly #handshakes
  readonly #handshakeErrors
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

  constructor(registry: MetricsRegistry) {
    this.registry = registry
    const listener = { labels: ["listener"] }
    const address = { labels: ["address"] }
    const upstream = { labels: ["upstream"] }
    const r = registry
    this.#accepted = r.counter("portcullis_listener_connections_total", "TCP connections accepted", listener)
    this.#handshakes = r.counter("portcullis_tls_handshakes_total", "TLS handshakes completed", listener)
    this.#handshakeErrors = r.counter(
      "portcullis_tls_handshake_errors_total",
      "TLS handshakes that failed, timed out or were refused",
      listener,
    )
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
    this.#clientRefusedRequests = r.counter(
      "portcullis_client_refused_requests_total",
      "requests refused by the per-client rate limit",
      address,
    )
  }

  listener(name: string): ListenerCounters {
    return {
      accepted: this.#accepted.child(name),
      handshakes: this.#handshakes.child(name),
      handshakeErrors: this.#handshakeErrors.child(name),
      proxyHeaderErrors: this.#proxyHeaderErrors.child(name),
    }
  }

  socket(address: string): SocketCounters {
    return { refused: this.#socketRefused.child(address) }
  }

  upstream(name: string): UpstreamCounters {
    return {
      retries: this.#retries.child(name),
      queued: this.#queued.child(name),
      queueFull: this.#queueFull.child(name),
      queueTimeouts: this.#queueTimeouts.child(name),
      ejections: this.#ejections.child(name),
      tcpRejected: this.#tcpRejected.child(name),
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
