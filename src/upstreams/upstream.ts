/**
 * @module upstream: a named pool of backends with a balancer, health (active and passive), a wait queue for
 * backends at max_connections, and one keep-alive connection pool per backend.
 */
import type { UpstreamConfig } from "../config/schema.ts"
import { BackendError } from "../core/errors.ts"
import type { Failure } from "../core/failure.ts"
import type { Logger } from "../core/log.ts"
import { detachedInstruments, type UpstreamCounters } from "../state/instruments.ts"
import { Backend } from "./backend.ts"
import { type BackendTls, dialTls, loadBackendTls } from "./backend-tls.ts"
import type { Balancer, PickContext } from "./balancer.ts"
import { compileHashKey, createBalancer, type HashKey, StickyCookie } from "./balancers/index.ts"
import { createBackendPool } from "./connector.ts"
import { Dialer } from "./dial.ts"
import { HealthChecker, type HealthRegistry, type HealthStatus } from "./health/active.ts"
import { type FailureSource, OutlierDetector, type OutlierStatus } from "./health/passive.ts"
import type { BackendPool } from "./pool.ts"

/** UpstreamStatus is the admin API's view of an upstream. */
export interface UpstreamStatus {
  name: string
  balance: string
  sticky: string | undefined
  backends: {
    id: string
    state: string
    weight: number
    backup: boolean
    in_flight: number
    max_connections: number | null
    ejected: boolean
    ejected_until: number
  }[]
  health: HealthCheckStatus[] | undefined
  passive: PassiveStatus[] | undefined
  queue: { waiting: number; size: number }
  stats: UpstreamStats
}

/** HealthCheckStatus is one backend's active health record as the admin API shows it (snake_case names). */
export interface HealthCheckStatus {
  id: string
  state: string
  healthy: boolean | undefined
  consecutive_successes: number
  consecutive_failures: number
  last_error: string | undefined
  last_check_at: number
  last_duration_ms: number
}

/** PassiveStatus is one backend's passive health as the admin API shows it. */
export interface PassiveStatus {
  id: string
  consecutive_failures: number
  times_ejected: number
  ejected_until: number
}

/** UpstreamStats is the status view of an upstream's counters (which the runtime keeps across reloads). */
export interface UpstreamStats {
  retries: number
  queued: number
  queue_full: number
  queue_timeouts: number
  ejections: number
  /** tcp connections closed at once because every backend was at max_connections. */
  tcp_rejected: number
}

/** SlotWaiter is a request waiting for a backend under its max_connections (the http exchange). */
export interface SlotWaiter {
  /** A slot may be free: pick again. */
  onSlot(): void
  /** Waited queue.timeout in vain. */
  onQueueTimeout(): void
}

/** UpstreamOptions: what the generation passes besides the config. */
export interface UpstreamOptions {
  log: Logger
  /** Active health records by backend id, kept by the runtime across reloads (one registry per upstream name). */
  healthRegistry?: HealthRegistry | undefined
  /** The same upstream in the generation being replaced: drain and ejection state carry over by backend id. */
  previous?: Upstream | undefined
  /** Counters by upstream name from the runtime's registry (default: counted here alone). */
  stats?: UpstreamCounters | undefined
  /** false (config metrics.enabled): backend connects are not timed (default true) */
  metrics?: boolean | undefined
  /** false: active health follows healthRegistry (a cluster worker; the primary probes). Default true. */
  probe?: boolean | undefined
}

/** Upstream owns its backends, picks one per request and gives out that backend's connection pool. */
export class Upstream {
  readonly name: string
  readonly config: UpstreamConfig
  readonly backends: readonly Backend[]
  readonly tls: BackendTls | undefined
  /** Set when `sticky` is configured: the engine reads and sets its cookie. */
  readonly sticky: StickyCookie | undefined
  /** Set when `balance: hash`: what the engine passes as the pick key. */
  readonly hashKey: HashKey | undefined
  /** Passive health, unless `passive.enabled: false`. */
  readonly outliers: OutlierDetector | undefined
  readonly health: HealthChecker | undefined
  /** Counts by upstream name, kept by the runtime across generations. */
  readonly stats: UpstreamCounters
  /** Some backend has max_connections: releases must wake waiters. */
  readonly limited: boolean
  readonly #balancer: Balancer
  readonly #pools = new Map<Backend, BackendPool>()
  readonly #dialers = new Map<Backend, Dialer>()
  /** Requests waiting for a slot, oldest first, with their timeout timers. */
  readonly #waiters = new Map<SlotWaiter, NodeJS.Timeout>()
  readonly #log: Logger
  readonly #metrics: boolean
  /** Panic mode is on (logged once per episode). */
  #panic = false
  /** ejectedUntil of each backend while a panic pick lifts them (one array, reused). */
  readonly #panicSaved: number[] = []

  constructor(name: string, config: UpstreamConfig, options: UpstreamOptions) {
    const { log } = options
    this.#log = log
    this.name = name
    this.config = config
    this.stats = options.stats ?? detachedInstruments().upstream(name)
    this.#metrics = options.metrics ?? true
    this.tls = loadBackendTls(name, config, log)
    this.backends = config.backends.map(
      (b) =>
        new Backend({
          address: b.address,
          weight: b.weight,
          backup: b.backup,
          maxConnections: b.max_connections,
          slowStart: config.slow_start,
        }),
    )
    this.limited = this.backends.some((b) => Number.isFinite(b.maxConnections))
    const previous = options.previous
    if (previous) {
      const now = Date.now()
      for (const backend of this.backends) {
        const old = previous.backends.find((b) => b.id === backend.id)
        if (!old) continue
        if (old.state === "draining") backend.state = "draining"
        if (old.ejectedUntil > now) backend.ejectedUntil = old.ejectedUntil
        backend.returnedAt = old.returnedAt
      }
    }
    const balancer = createBalancer(config.balance)
    this.sticky = config.sticky ? new StickyCookie(balancer, config.sticky.cookie) : undefined
    this.#balancer = this.sticky ?? balancer
    this.hashKey = config.balance === "hash" ? compileHashKey(config.hash_key) : undefined
    const passive = config.passive
    this.outliers = passive.enabled
      ? new OutlierDetector({
          consecutiveErrors: passive.consecutive_errors,
          baseEjection: passive.base_ejection,
          maxEjection: passive.max_ejection,
          count5xx: passive.count_5xx,
          maxEjectedPercent: passive.max_ejected_percent,
          backends: this.backends,
          upstream: name,
          log,
        })
      : undefined
    this.health = config.health
      ? new HealthChecker({
          backends: this.backends,
          config: config.health,
          dialerFor: (backend) => this.dialerFor(backend),
          log,
          upstream: name,
          proxyProtocol: config.send_proxy_protocol,
          protocol: config.protocol,
          registry: options.healthRegistry,
          onChange: onHealthChange,
          probe: options.probe,
        })
      : undefined
  }

  /** start runs the first round of active health checks (if configured) and resolves when it is complete. */
  async start(): Promise<void> {
    await this.health?.start()
  }

  /** pick chooses an available backend, or undefined when none is; in panic mode (see #panicPick) an ejected one. */
  pick(context?: PickContext): Backend | undefined {
    const picked = this.#balancer.pick(this.backends, context)
    if (picked !== undefined || this.outliers === undefined) {
      if (this.#panic && picked !== undefined && picked.ejectedUntil <= Date.now()) this.#endPanic()
      return picked
    }
    return this.#panicPick(context)
  }

  /**
   * panicPick is Envoy's panic threshold at 100%: when passive health has ejected every backend that is otherwise in
   * service, a pick ignores the ejections, so the upstream degrades to "some requests may fail" rather than "every
   * request gets 503". Returns undefined when some backend is in service and only busy (max_connections) or tried.
   */
  #panicPick(context: PickContext | undefined): Backend | undefined {
    const now = Date.now()
    const backends = this.backends
    let ejected = 0
    for (const b of backends) {
      if (b.state !== "up") continue
      if (b.ejectedUntil <= now) return undefined
      ejected++
    }
    if (ejected === 0) return undefined
    if (!this.#panic) {
      this.#panic = true
      this.#log.warn(
        { upstream: this.name },
        `every backend of upstream ${this.name} is ejected: panic mode, requests go to all of them`,
      )
    }
    // Lift the ejections for this one synchronous pick, then put them back (the balancers read ejectedUntil).
    const saved = this.#panicSaved
    for (let i = 0; i < backends.length; i++) {
      saved[i] = backends[i]!.ejectedUntil
      backends[i]!.ejectedUntil = 0
    }
    try {
      return this.#balancer.pick(backends, context)
    } finally {
      for (let i = 0; i < backends.length; i++) backends[i]!.ejectedUntil = saved[i]!
    }
  }

  #endPanic(): void {
    this.#panic = false
    this.#log.info({ upstream: this.name }, `upstream ${this.name} has a backend in service again: panic mode ends`)
  }

  /** dialerFor returns the backend's dialer (its SNI and TLS session cache), shared by pools, tcp engine and health. */
  dialerFor(backend: Backend): Dialer {
    let dialer = this.#dialers.get(backend)
    if (!dialer) {
      const { host, port } = backend.address
      dialer = new Dialer({ host, port, tls: dialTls(this.tls), connectTimeout: this.config.timeouts.connect })
      if (this.#metrics) dialer.connectDuration = this.stats.connectDuration
      this.#dialers.set(backend, dialer)
    }
    return dialer
  }

  /** poolFor returns the backend's keep-alive pool, made on first use. */
  poolFor(backend: Backend): BackendPool {
    let pool = this.#pools.get(backend)
    if (!pool) {
      pool = createBackendPool(backend, this.config, this.dialerFor(backend))
      this.#pools.set(backend, pool)
    }
    return pool
  }

  // Accounting: the engines touch a backend's state (in flight, passive health, counters, the wait queue) only
  // through acquire, release, succeeded and failed, so each rule lives here once.

  /** acquire counts one request (http) or connection (tcp) in flight on the backend; release ends it. */
  acquire(backend: Backend): void {
    backend.inFlight++
  }

  /** release ends one request on the backend and hands a freed slot to the oldest waiter, if any. */
  release(backend: Backend): void {
    backend.inFlight--
    if (this.limited && this.#waiters.size > 0) this.#wakeOne()
  }

  /** succeeded: the backend answered (a response below 500, or a tcp connection opened); ends its failure streak. */
  succeeded(backend: Backend): void {
    this.outliers?.onSuccess(backend)
  }

  /**
   * failed feeds passive health with a classified failure, or a 5xx response (who saw it: `source`, the client and
   * route, for the single-backend rule); returns true when it ejected the backend. A failure that is not the
   * backend's (the client's body, the client leaving, our own bug) is ignored here, so one bad client can never
   * eject a healthy backend.
   */
  failed(backend: Backend, failure: Failure | "5xx", source?: FailureSource): boolean {
    if (failure !== "5xx" && (failure.source !== "backend" || failure.kind === "unavailable")) return false
    // Counted whether or not passive health is on: the dashboard's backend error rate and /metrics read it.
    this.stats.backendError(backend.id, failure === "5xx" ? failure : failure.kind)
    const outliers = this.outliers
    if (outliers === undefined) return false
    if (!outliers.onFailure(backend, failure === "5xx" ? failure : failure.kind, Date.now(), source)) return false
    this.stats.ejections.inc()
    return true
  }

  /** retried counts a request sent again to another backend. */
  retried(): void {
    this.stats.retries.inc()
  }

  /** rejectedFull counts a tcp connection closed at once because every backend was at max_connections. */
  rejectedFull(): void {
    this.stats.tcpRejected.inc()
  }

  /**
   * saturated says whether a request found no backend only because backends that could serve it are at their
   * max_connections (then it may wait in the queue rather than fail).
   */
  saturated(exclude: ReadonlySet<Backend> | undefined): boolean {
    if (!this.limited) return false
    const now = Date.now()
    for (const b of this.backends) {
      if (b.state === "up" && b.ejectedUntil <= now && b.inFlight >= b.maxConnections && !exclude?.has(b)) return true
    }
    return false
  }

  /**
   * wait queues a request until a slot frees (then waiter.onSlot) or queue.timeout passes (waiter.onQueueTimeout).
   * Throws PC_BACKEND_QUEUE_FULL when queue.size requests already wait.
   */
  wait(waiter: SlotWaiter): void {
    const queue = this.config.queue
    if (this.#waiters.size >= queue.size) {
      this.stats.queueFull.inc()
      throw new BackendError(
        "PC_BACKEND_QUEUE_FULL",
        `upstream ${this.name}: every backend is at max_connections and ${queue.size} requests already wait`,
      )
    }
    this.stats.queued.inc()
    const timer = setTimeout(() => {
      this.#waiters.delete(waiter)
      this.stats.queueTimeouts.inc()
      waiter.onQueueTimeout()
    }, queue.timeout)
    this.#waiters.set(waiter, timer)
  }

  /** cancelWait takes a request out of the queue (its client went away). */
  cancelWait(waiter: SlotWaiter): void {
    const timer = this.#waiters.get(waiter)
    if (timer === undefined) return
    clearTimeout(timer)
    this.#waiters.delete(waiter)
  }

  #wakeOne(): void {
    for (const [waiter, timer] of this.#waiters) {
      clearTimeout(timer)
      this.#waiters.delete(waiter)
      waiter.onSlot()
      return
    }
  }

  /** backend finds a backend by id ("127.0.0.1:3000"). */
  backend(id: string): Backend | undefined {
    return this.backends.find((b) => b.id === id)
  }

  /**
   * setDraining stops new requests to a backend (in-flight ones finish) or puts it back: in the state its last
   * active check found (up without checks). Returns false when there is no such backend.
   */
  setDraining(id: string, on: boolean): boolean {
    const backend = this.backend(id)
    if (!backend) return false
    if (on) backend.state = "draining"
    else backend.state = this.health?.status().find((h) => h.id === id)?.healthy === false ? "down" : "up"
    return true
  }

  /** close stops health checks, lets requests in flight finish, then closes the pools. */
  async close(): Promise<void> {
    await this.health?.close()
    await Promise.allSettled([...this.#pools.values()].map((p) => p.close()))
  }

  /** destroy stops health checks and closes every backend connection now. */
  async destroy(): Promise<void> {
    void this.health?.close()
    for (const timer of this.#waiters.values()) clearTimeout(timer)
    await Promise.allSettled([...this.#pools.values()].map((p) => p.destroy()))
  }

  status(): UpstreamStatus {
    const now = Date.now()
    return {
      name: this.name,
      balance: this.config.balance,
      sticky: this.sticky?.cookieName,
      backends: this.backends.map((b) => ({
        id: b.id,
        state: b.state,
        weight: b.weight,
        backup: b.backup,
        in_flight: b.inFlight,
        max_connections: Number.isFinite(b.maxConnections) ? b.maxConnections : null,
        ejected: b.ejectedUntil > now,
        ejected_until: b.ejectedUntil,
      })),
      health: this.health?.status().map(healthCheckStatus),
      passive: this.outliers?.status().map(passiveStatus),
      queue: { waiting: this.#waiters.size, size: this.config.queue.size },
      stats: {
        retries: this.stats.retries.value,
        queued: this.stats.queued.value,
        queue_full: this.stats.queueFull.value,
        queue_timeouts: this.stats.queueTimeouts.value,
        ejections: this.stats.ejections.value,
        tcp_rejected: this.stats.tcpRejected.value,
      },
    }
  }
}

function healthCheckStatus(h: HealthStatus): HealthCheckStatus {
  return {
    id: h.id,
    state: h.state,
    healthy: h.healthy,
    consecutive_successes: h.consecutiveSuccesses,
    consecutive_failures: h.consecutiveFailures,
    last_error: h.lastError,
    last_check_at: h.lastCheckAt,
    last_duration_ms: h.lastDurationMs,
  }
}

function passiveStatus(p: OutlierStatus): PassiveStatus {
  return {
    id: p.id,
    consecutive_failures: p.consecutiveFailures,
    times_ejected: p.timesEjected,
    ejected_until: p.ejectedUntil,
  }
}

/**
 * onHealthChange: an active check that finds an ejected backend back up ends its ejection (Envoy's
 * successful_active_health_check_uneject_host), so recovery takes rise × interval, not the ejection's backoff.
 */
function onHealthChange(backend: Backend, healthy: boolean): void {
  if (healthy && backend.ejectedUntil > Date.now()) {
    backend.ejectedUntil = 0
    backend.returnedAt = Date.now()
  }
}
