/** @module admin-api: status, metrics, reload and backend drain over HTTP on the admin address (loopback by default). */
import { readFileSync } from "node:fs"
import http from "node:http"
import https from "node:https"
import type { HostPort } from "../config/schema.ts"
import { ConfigError, errorMessage, PortcullisError } from "../core/errors.ts"
import type { Logger } from "../core/log.ts"
import { BearerToken } from "./auth.ts"
import { Dashboard } from "./dashboard/dashboard.ts"
import { CONTENT_TYPE } from "./metrics-endpoint.ts"

/** AdminActions: what the API can ask of the process; main.ts wires them to the runtime. */
export interface AdminActions {
  /** status: a snapshot (a cluster primary asks its workers first, hence a promise). */
  status(): unknown
  reload(): Promise<void>
  /** drain: a cluster primary resolves with which workers applied it (added to the answer). */
  drain(upstream: string, backend: string, on: boolean): void | Promise<void> | Promise<object>
  /**
   * metrics renders the Prometheus text (metrics-endpoint.ts); undefined when metrics are off (404); a cluster
   * primary sums its workers'.
   */
  metrics?(): string | undefined | Promise<string | undefined>
  /** restart replaces the workers one by one (POST /restart); resolves when the last new one is ready. */
  restart?(): Promise<unknown>
  /** upgrade starts the program anew on the listening sockets and hands over to it (POST /upgrade). */
  upgrade?(): Promise<unknown>
  /** certificates lists the certificates in use, without key material (a cluster primary asks its workers). */
  certificates?(): unknown
  /** failures lists the recent handshake failures, newest first (a cluster primary: every worker's). */
  failures?(): unknown
  /** clients is the ClientHello census and profile what-if of each listener (GET /tls/clients; summed workers). */
  clients?(): unknown
  /** dashboard is the live dashboard's snapshot (dashboard/data.ts), or a promise of it; with it GET / serves it. */
  dashboard?(): unknown
  /** ready: serving (not starting, not draining for shutdown); GET /readyz answers 503 otherwise. Default true. */
  ready?(): boolean
}

/** AdminSecurity: admin.token_file and admin.tls as the config gives them (paths). */
export interface AdminSecurity {
  token_file?: string | undefined
  tls?: { cert: string; key: string; client_ca: string } | undefined
}

/**
 * AdminApi serves GET / (the dashboard, its /assets/ and /dashboard/data), GET /status, /metrics, /certificates,
 * /tls/failures, /tls/clients, /healthz, /readyz, POST /reload and POST /upstreams/NAME/backends/ADDR/drain (and
 * /undrain). With a token_file every request needs the bearer token
 * (401 otherwise); with tls the listener is HTTPS and refuses, in the handshake, a client without a certificate
 * signed by client_ca. For an outside load balancer: /healthz is live (the process answers), /readyz is ready
 * (200 while serving, 503 while starting or shutting down, so the balancer stops sending before the listeners go).
 */
export class AdminApi {
  readonly address: HostPort
  readonly #server: http.Server
  readonly #actions: AdminActions
  readonly #log: Logger
  /** A reload moved the API elsewhere: answers close their connections. */
  #retired = false
  readonly #token: BearerToken | undefined
  readonly #dashboard: Dashboard | undefined

  constructor(address: HostPort, actions: AdminActions, log: Logger, security: AdminSecurity = {}) {
    this.address = address
    this.#actions = actions
    this.#log = log
    this.#token = security.token_file === undefined ? undefined : BearerToken.fromFile(security.token_file)
    const data = actions.dashboard?.bind(actions)
    this.#dashboard = data && new Dashboard(data)
    const handler = (req: http.IncomingMessage, res: http.ServerResponse) => {
      this.#handle(req, res).catch((err: unknown) => reply(res, 500, { error: errorMessage(err) }))
    }
    const t = security.tls
    this.#server = t
      ? https.createServer(
          {
            cert: readFileSync(t.cert),
            key: readFileSync(t.key),
            ca: readFileSync(t.client_ca),
            requestCert: true,
            rejectUnauthorized: true,
          },
          handler,
        )
      : http.createServer(handler)
  }

  /** scheme is how clients reach the API: https with admin.tls, else http. */
  get scheme(): "http" | "https" {
    return this.#server instanceof https.Server ? "https" : "http"
  }

  async #handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    if (this.#token && !this.#token.allows(req.headers)) {
      res.setHeader("www-authenticate", 'Bearer realm="portcullis-admin"')
      return reply(res, 401, { error: "a valid bearer token is required" })
    }
    const url = new URL(req.url ?? "/", "http://admin")
    const parts = url.pathname.split("/").filter(Boolean).map(decodeURIComponent)
    if (this.#dashboard?.serve(req, res, url.pathname)) return
    if (req.method === "GET" && url.pathname === "/healthz") return reply(res, 200, { ok: true })
    if (req.method === "GET" && url.pathname === "/readyz") {
      const ready = this.#actions.ready?.() ?? true
      return reply(res, ready ? 200 : 503, { ready })
    }
    if (req.method === "GET" && url.pathname === "/status") return reply(res, 200, await this.#actions.status())
    if (req.method === "GET" && url.pathname === "/metrics" && this.#actions.metrics) {
      const text = await this.#actions.metrics()
      if (text === undefined) return reply(res, 404, { error: "metrics are off (metrics.enabled: false)" })
      res.writeHead(200, { "content-type": CONTENT_TYPE, "content-length": Buffer.byteLength(text) })
      res.end(text)
      return
    }
    if (req.method === "GET" && url.pathname === "/certificates" && this.#actions.certificates) {
      return reply(res, 200, await this.#actions.certificates())
    }
    if (req.method === "GET" && url.pathname === "/tls/failures" && this.#actions.failures) {
      return reply(res, 200, await this.#actions.failures())
    }
    if (req.method === "GET" && url.pathname === "/tls/clients" && this.#actions.clients) {
      return reply(res, 200, await this.#actions.clients())
    }
    if (req.method === "POST" && url.pathname === "/reload") {
      try {
        await this.#actions.reload()
        if (this.#retired) res.setHeader("connection", "close")
        return reply(res, 200, { reloaded: true })
      } catch (err) {
        // The reload is all or nothing (runtime.ts): when it throws, the running generation and this API stay.
        const problems = err instanceof ConfigError ? err.problems : undefined
        this.#log.error({ err: errorMessage(err) }, "reload refused; the running config stays")
        return reply(res, 422, { reloaded: false, error: errorMessage(err), problems })
      }
    }
    for (const action of ["restart", "upgrade"] as const) {
      const run = this.#actions[action]
      if (req.method !== "POST" || url.pathname !== `/${action}` || !run) continue
      try {
        const done = await run()
        return reply(res, 200, { [action === "restart" ? "restarted" : "upgraded"]: true, ...(done as object) })
      } catch (err) {
        this.#log.error({ err: errorMessage(err) }, `${action} refused; the running processes stay`)
        return reply(res, 422, { [action === "restart" ? "restarted" : "upgraded"]: false, error: errorMessage(err) })
      }
    }
    if (req.method === "POST" && parts[0] === "upstreams" && parts[2] === "backends" && parts.length === 5) {
      const on = parts[4] === "drain"
      if (!on && parts[4] !== "undrain") return reply(res, 404, { error: "unknown action" })
      try {
        const done = await this.#actions.drain(parts[1]!, parts[3]!, on)
        return reply(res, 200, { upstream: parts[1], backend: parts[3], draining: on, ...done })
      } catch (err) {
        return reply(res, 404, { error: errorMessage(err) })
      }
    }
    reply(res, 404, { error: `no such endpoint: ${req.method} ${url.pathname}` })
  }

  /** start binds the admin address, or listens on an inherited listening socket (`fd`, see cluster/takeover.ts). */
  start(fd?: number): Promise<void> {
    return new Promise((resolve, reject) => {
      this.#server.once("error", (err: NodeJS.ErrnoException) =>
        reject(
          new PortcullisError(
            "PC_LISTEN_FAILED",
            `binding admin ${this.address.host}:${this.address.port}: ${err.code ?? err.message}`,
          ),
        ),
      )
      if (fd !== undefined) this.#server.listen({ fd }, () => resolve())
      else this.#server.listen(this.address.port, this.address.host, () => resolve())
    })
  }

  /** fd is the listening socket's file descriptor, for a successor process (-1 when not listening). */
  get fd(): number {
    return (this.#server as unknown as { _handle?: { fd?: number } | null })._handle?.fd ?? -1
  }

  get port(): number {
    const a = this.#server.address()
    return a && typeof a === "object" ? a.port : 0
  }

  /**
   * retire stops accepting after a reload moved the API: requests in progress (the POST /reload that asked) get their
   * answer, idle connections close now, the rest when their answer is sent or after 5 s.
   */
  retire(): void {
    this.#retired = true
    this.#server.close()
    this.#server.closeIdleConnections()
    setTimeout(() => this.#server.closeAllConnections(), 5_000).unref()
  }

  close(): Promise<void> {
    this.#server.closeAllConnections()
    return new Promise((resolve) => this.#server.close(() => resolve()))
  }
}

function reply(res: http.ServerResponse, status: number, body: unknown): void {
  const text = `${JSON.stringify(body, null, 2)}\n`
  res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(text) })
  res.end(text)
}
