/** @module active: active health checks; HTTP GETs or TCP connects (over TLS when the upstream re-encrypts). */
import http from "node:http"
import type net from "node:net"
import type { HealthConfig } from "../../config/schema.ts"
import { errorMessage } from "../../core/errors.ts"
import type { Logger } from "../../core/log.ts"
import type { Backend } from "../backend.ts"
import { Dialer, proxyHeader } from "../dial.ts"
import { h2Check } from "./h2-check.ts"

/** HealthTls is how checks reach a re-encrypting upstream: the same trust and client certificate as requests. */
export interface HealthTls {
  ca?: string | Buffer | undefined
  /** SNI and the name verified on the backend certificate (default the backend host when it is a name). */
  servername?: string | undefined
  cert?: string | Buffer | undefined
  key?: string | Buffer | undefined
  rejectUnauthorized: boolean
}

/** HealthRecord is one backend's active health, keyed by backend id in a HealthRegistry. */
export interface HealthRecord {
  /** undefined until the first check completes. */
  healthy: boolean | undefined
  consecutiveSuccesses: number
  consecutiveFailures: number
  lastError: string | undefined
  /** ms since epoch of the last completed check; 0 before. */
  lastCheckAt: number
  lastDurationMs: number
}

/**
 * HealthRegistry holds health records by backend id so they outlive a config reload: pass the same registry (one
 * per upstream name) to the new generation's HealthChecker and known backends keep their state and counters, while
 * new ones start in the state their first check finds. Call retain() with the new backend ids to drop the others.
 */
export class HealthRegistry {
  readonly #records = new Map<string, HealthRecord>()
  readonly #listeners = new Set<(id: string, record: HealthRecord) => void>()

  /** onChange calls listener after a backend's health (healthy) changed; returns the function that unsubscribes. */
  onChange(listener: (id: string, record: HealthRecord) => void): () => void {
    this.#listeners.add(listener)
    return () => this.#listeners.delete(listener)
  }

  /** changed tells the listeners that id's record changed its health (the checker calls it). */
  changed(id: string): void {
    const record = this.#records.get(id)
    if (record) for (const listener of this.#listeners) listener(id, record)
  }

  /**
   * set takes a record found elsewhere (a cluster worker gets the primary's) and tells the listeners when its
   * health differs from the one held.
   */
  set(id: string, next: HealthRecord): void {
    const record = this.record(id)
    const was = record.healthy
    Object.assign(record, next)
    if (next.healthy !== was) this.changed(id)
  }

  /** snapshot copies every record by backend id (what a primary sends its workers). */
  snapshot(): Record<string, HealthRecord> {
    const out: Record<string, HealthRecord> = {}
    for (const [id, record] of this.#records) out[id] = { ...record }
    return out
  }

  get(id: string): HealthRecord | undefined {
    return this.#records.get(id)
  }

  /** record returns the backend's record, making an unknown one. */
  record(id: string): HealthRecord {
    let record = this.#records.get(id)
    if (record === undefined) {
      record = {
        healthy: undefined,
        consecutiveSuccesses: 0,
        consecutiveFailures: 0,
        lastError: undefined,
        lastCheckAt: 0,
        lastDurationMs: 0,
      }
      this.#records.set(id, record)
    }
    return record
  }

  /** retain forgets every backend not in ids. */
  retain(ids: Iterable<string>): void {
    const keep = new Set(ids)
    for (const id of this.#records.keys()) if (!keep.has(id)) this.#records.delete(id)
  }
}

export interface HealthCheckerOptions {
  backends: readonly Backend[]
  config: HealthConfig
  tls?: HealthTls | undefined
  /**
   * The upstream's dialer for a backend, so checks send the same SNI as requests and share their TLS session
   * cache. Without it each backend gets a dialer of its own made from `tls`.
   */
  dialerFor?: ((backend: Backend) => Dialer) | undefined
  log: Logger
  /** Names the upstream in log lines (default "?"). */
  upstream?: string
  /** Shared records that survive a reload (default a private registry). */
  registry?: HealthRegistry
  /**
   * The upstream's `send_proxy_protocol`: a backend that expects a PROXY header refuses connections without one, so
   * checks send one too: v2 LOCAL, v1 UNKNOWN (the check is the proxy's own connection, not a client's).
   */
  proxyProtocol?: "v1" | "v2" | undefined
  /** Called after a backend's health changes (including the first check), e.g. for metrics or cluster workers. */
  onChange?: (backend: Backend, healthy: boolean) => void
  /** What the backends speak (the upstream's `protocol`): HTTP checks speak it too (h2-check.ts). */
  protocol?: "http1" | "h2" | "h2c" | "auto" | undefined
  /**
   * false: send no probes, follow the registry instead (a cluster worker: the primary probes once for every worker
   * and its records arrive through HealthRegistry.set). Default true.
   */
  probe?: boolean | undefined
}

/** HealthStatus is one backend's active health for the admin API. */
export interface HealthStatus extends HealthRecord {
  id: string
  state: Backend["state"]
}

/** Most body bytes read to look for expect_body. */
const MAX_BODY = 64 * 1024

/**
 * HealthChecker checks every backend once per `interval`, all in parallel, each check bounded by `timeout`.
 * A backend goes down after `fall` failures in a row and up after `rise` successes in a row; a backend with no record
 * yet takes the state of its first check at once. start() runs the first round and resolves when it is complete, so
 * a generation that awaits start() before taking traffic never sends a request to a backend known to be down.
 * Until start() resolves, backends keep the state they were made with (up). Each change of health is logged once at
 * info and sets backend.state, except that a "draining" backend stays draining (its health is still tracked and
 * applied once the drain is lifted, at the next check). Rounds never overlap: the next is scheduled after the last ends.
 */
export class HealthChecker {
  readonly #backends: readonly Backend[]
  readonly #config: HealthConfig
  readonly #tls: HealthTls | undefined
  readonly #dialerFor: (backend: Backend) => Dialer
  readonly #log: Logger
  readonly #upstream: string
  readonly #registry: HealthRegistry
  readonly #onChange: ((backend: Backend, healthy: boolean) => void) | undefined
  readonly #statusLow: number
  readonly #statusHigh: number
  /** The PROXY header every check connection starts with, when the upstream sends one. */
  readonly #proxyHeader: Buffer | undefined
  readonly #inflight = new Set<net.Socket | http.ClientRequest>()
  readonly #protocol: "http1" | "h2" | "h2c" | "auto"
  #timer: NodeJS.Timeout | undefined
  #round: Promise<void> | undefined
  #closed = false
  readonly #probe: boolean
  #unfollow: (() => void) | undefined

  constructor(options: HealthCheckerOptions) {
    this.#backends = options.backends
    this.#config = options.config
    this.#tls = options.tls
    this.#protocol = options.protocol ?? "http1"
    this.#probe = options.probe ?? true
    if (options.dialerFor) this.#dialerFor = options.dialerFor
    else {
      const own = new Map<Backend, Dialer>()
      this.#dialerFor = (backend) => {
        let dialer = own.get(backend)
        if (!dialer) {
          const { host, port } = backend.address
          // connectTimeout 0: each check is bounded by its own `timeout`.
          dialer = new Dialer({ host, port, tls: this.#tls, connectTimeout: 0 })
          own.set(backend, dialer)
        }
        return dialer
      }
    }
    this.#log = options.log
    this.#upstream = options.upstream ?? "?"
    this.#registry = options.registry ?? new HealthRegistry()
    this.#onChange = options.onChange
    const [low, high] = options.config.expect_status.split("-")
    this.#statusLow = Number(low)
    this.#statusHigh = Number(high ?? low)
    const pp = options.proxyProtocol
    this.#proxyHeader = pp && proxyHeader(pp, undefined)
  }

  /** start applies remembered health, runs the first round of checks and resolves when it is complete. */
  async start(): Promise<void> {
    if (this.#round !== undefined || this.#closed) return
    for (const backend of this.#backends) {
      const healthy = this.#registry.get(backend.id)?.healthy
      if (healthy !== undefined) this.#apply(backend, healthy)
    }
    if (!this.#probe) {
      this.#unfollow ??= this.#registry.onChange((id, record) => this.#follow(id, record))
      return
    }
    await this.#runRound()
  }

  /** #follow applies a record that changed elsewhere (the primary's probe) as #record applies its own. */
  #follow(id: string, record: HealthRecord): void {
    if (this.#closed) return
    const backend = this.#backends.find((b) => b.id === id)
    if (!backend || record.healthy === undefined) return
    const was = backend.state === "down" ? false : backend.state === "up" ? true : undefined
    if (record.healthy && was === false) backend.returnedAt = Date.now()
    this.#apply(backend, record.healthy)
    this.#onChange?.(backend, record.healthy)
  }

  /** close stops checking: no new round, checks in flight are cut short; resolves when the last round has ended. */
  async close(): Promise<void> {
    this.#closed = true
    this.#unfollow?.()
    if (this.#timer !== undefined) clearTimeout(this.#timer)
    this.#timer = undefined
    for (const handle of this.#inflight) handle.destroy(new Error("health checker closed"))
    await this.#round
  }

  /** status is a snapshot of every backend's health, safe to serialise. */
  status(): HealthStatus[] {
    return this.#backends.map((backend) => ({
      id: backend.id,
      state: backend.state,
      ...this.#registry.record(backend.id),
    }))
  }

  /** checkNow runs one round at once (for tests and an admin "check now"); resolves when it ends. */
  async checkNow(): Promise<void> {
    await this.#round
    if (this.#closed || !this.#probe) return
    if (this.#timer !== undefined) clearTimeout(this.#timer)
    this.#timer = undefined
    await this.#runRound()
  }

  #runRound(): Promise<void> {
    const round = Promise.all(this.#backends.map((backend) => this.#checkOne(backend))).then(() => {
      if (this.#round === round) this.#round = undefined
      this.#schedule()
    })
    this.#round = round
    return round
  }

  #schedule(): void {
    if (this.#closed || this.#timer !== undefined) return
    this.#timer = setTimeout(() => {
      this.#timer = undefined
      if (this.#closed) return
      void this.#runRound()
    }, this.#config.interval)
    this.#timer.unref()
  }

  async #checkOne(backend: Backend): Promise<void> {
    const started = Date.now()
    let error: string | undefined
    try {
      const type = this.#config.type
      await (type === "tcp"
        ? this.#tcpCheck(backend)
        : type === "grpc" || this.#protocol === "h2" || this.#protocol === "h2c"
          ? this.#h2Check(backend)
          : this.#httpCheck(backend))
    } catch (err) {
      error = errorMessage(err)
    }
    if (this.#closed) return
    this.#record(backend, error, started)
  }

  #record(backend: Backend, error: string | undefined, started: number): void {
    const now = Date.now()
    const record = this.#registry.record(backend.id)
    record.lastCheckAt = now
    record.lastDurationMs = now - started
    record.lastError = error
    const ok = error === undefined
    if (ok) {
      record.consecutiveSuccesses++
      record.consecutiveFailures = 0
    } else {
      record.consecutiveFailures++
      record.consecutiveSuccesses = 0
    }
    const was = record.healthy
    let healthy = was
    if (was === undefined) healthy = ok
    else if (!was && ok && record.consecutiveSuccesses >= this.#config.rise) healthy = true
    else if (was && !ok && record.consecutiveFailures >= this.#config.fall) healthy = false
    record.healthy = healthy
    const changed = healthy !== was
    if (changed) {
      const where = `backend ${backend.id} of upstream ${this.#upstream}`
      const fields = { upstream: this.#upstream, backend: backend.id, healthy }
      // A first check that finds the backend up changes nothing anyone saw (it was up), so it is not logged.
      if (!healthy) this.#log.info({ ...fields, error }, `${where} is down: ${error}`)
      else if (was === false) this.#log.info(fields, `${where} is up`)
      // Coming back up after being down: ramp its weight (slow start, if configured).
      if (healthy && was === false) backend.returnedAt = now
    }
    this.#apply(backend, healthy === true)
    if (changed) {
      this.#onChange?.(backend, healthy === true)
      this.#registry.changed(backend.id)
    }
  }

  #apply(backend: Backend, healthy: boolean): void {
    if (backend.state === "draining") return
    backend.state = healthy ? "up" : "down"
  }

  /** #tcpCheck passes when a connection (and the TLS handshake, when re-encrypting) completes within the timeout. */
  #tcpCheck(backend: Backend): Promise<void> {
    const timeout = this.#config.timeout
    return new Promise<void>((resolve, reject) => {
      let settled = false
      const done = (err?: Error | null) => {
        if (settled) return
        settled = true
        clearTimeout(timer)
        this.#inflight.delete(raw)
        raw.destroy()
        if (!err) resolve()
        else reject(err)
      }
      const timer = setTimeout(() => done(new Error(`timed out after ${timeout} ms`)), timeout)
      const raw = this.#dial(backend, (err, socket) => {
        socket?.destroy()
        done(err)
      })
      this.#inflight.add(raw)
    })
  }

  /**
   * #dial opens a check connection through the backend's dialer: the PROXY header first (when configured), then
   * TLS when re-encrypting, with the dialer's SNI and session cache; no ALPN (a check speaks HTTP/1.1 or nothing).
   * Returns the socket to destroy when the check ends; the check's own timer bounds it.
   */
  #dial(backend: Backend, callback: (err: Error | null, socket?: net.Socket) => void): net.Socket {
    return this.#dialerFor(backend).dial({ header: this.#proxyHeader, timeout: 0 }, callback)
  }

  /** #h2Check: the HTTP check (or the gRPC health check) over HTTP/2, for h2 and h2c upstreams. */
  #h2Check(backend: Backend): Promise<void> {
    const config = this.#config
    const dialer = this.#dialerFor(backend)
    const started = Date.now()
    return new Promise<void>((resolve, reject) => {
      let socket: net.Socket | undefined
      const timer = setTimeout(() => {
        socket?.destroy()
        reject(new Error(`timed out after ${config.timeout} ms`))
      }, config.timeout)
      socket = dialer.dial(
        { header: this.#proxyHeader, timeout: 0, alpn: dialer.tls ? ["h2"] : undefined },
        (err, s) => {
          if (err || !s) {
            clearTimeout(timer)
            reject(err ?? new Error("no socket"))
            return
          }
          this.#inflight.add(s)
          const left = Math.max(1, config.timeout - (Date.now() - started))
          clearTimeout(timer)
          h2Check(
            s,
            {
              scheme: dialer.tls ? "https" : "http",
              authority: config.host ?? backend.id,
              kind: config.type === "grpc" ? "grpc" : "http",
              path: config.path,
              service: config.grpc_service ?? "",
              statusLow: this.#statusLow,
              statusHigh: this.#statusHigh,
              expectBody: config.expect_body,
            },
            left,
          ).then(
            () => {
              this.#inflight.delete(s)
              resolve()
            },
            (e: unknown) => {
              this.#inflight.delete(s)
              reject(e)
            },
          )
        },
      )
    })
  }

  /** #httpCheck passes on a status in expect_status and, if set, a body containing expect_body. */
  #httpCheck(backend: Backend): Promise<void> {
    const { host, port } = backend.address
    const config = this.#config
    const timeout = config.timeout
    const headers = { host: config.host ?? backend.id, "user-agent": "portcullis-health-check", connection: "close" }
    return new Promise<void>((resolve, reject) => {
      let raw: net.Socket | undefined
      // The connection (PROXY header first, then TLS when re-encrypting) is #dial's; http.request speaks HTTP on it.
      // No agent: Node ignores createConnection when given one, even `false`.
      const options: http.RequestOptions = {
        host,
        port,
        method: "GET",
        path: config.path,
        headers,
        createConnection: ((_options: unknown, oncreate: (err: Error | null, socket?: net.Socket) => void) => {
          raw = this.#dial(backend, oncreate)
          return undefined
        }) as unknown as http.RequestOptions["createConnection"],
      }
      const req = http.request(options)
      this.#inflight.add(req)
      let settled = false
      const done = (err?: Error) => {
        if (settled) return
        settled = true
        clearTimeout(timer)
        this.#inflight.delete(req)
        req.destroy()
        raw?.destroy()
        if (err === undefined) resolve()
        else reject(err)
      }
      const timer = setTimeout(() => req.destroy(new Error(`timed out after ${timeout} ms`)), timeout)
      req.on("error", done)
      req.once("close", () => done(new Error("connection closed before a response")))
      req.once("response", (res) => {
        res.on("error", done)
        const status = res.statusCode ?? 0
        if (status < this.#statusLow || status > this.#statusHigh) {
          done(new Error(`status ${status} (expected ${config.expect_status})`))
          return
        }
        const expect = config.expect_body
        if (expect === undefined) {
          done()
          return
        }
        let body = ""
        res.setEncoding("utf8")
        res.on("data", (chunk: string) => {
          body += chunk
          if (body.includes(expect)) done()
          else if (body.length > MAX_BODY) done(new Error(`body does not contain ${JSON.stringify(expect)}`))
        })
        res.once("end", () =>
          done(body.includes(expect) ? undefined : new Error(`body does not contain ${JSON.stringify(expect)}`)),
        )
      })
      req.end()
    })
  }
}
