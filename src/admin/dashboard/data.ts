/**
 * @module dashboard-data: what GET /dashboard/data answers: the registry's counters summed to the totals the page
 * charts (it turns them into rates itself), the live state of listeners, backends and certificates, and at most one
 * such snapshot per second however many pages poll (DashboardFeed).
 */

import { TlsListener } from "../../listeners/tls-listener.ts"
import type { Generation } from "../../runtime.ts"
import type { HandshakeFailure } from "../../state/instruments.ts"
import type { MetricSnapshot } from "../../state/registry.ts"
import type { LoadedCertificate } from "../../tls/certificate.ts"
import type { OcspStatus } from "../../tls/ocsp/stapler.ts"
import { certificateList } from "../certificates.ts"

/** DashboardSource: what a snapshot reads (the Runtime satisfies it, plus the fleet's instances and the census). */
export interface DashboardSource {
  readonly state: {
    readonly registry: { snapshot(): MetricSnapshot[] }
    readonly instruments: { readonly failures: { recent(): HandshakeFailure[] } }
  }
  readonly generation: Generation | undefined
  ports?(): Record<string, number>
  /** instances: the fleet store's status (its instance list), when a cluster.store is configured. */
  instances?(): unknown
  /** census: GET /tls/clients's answer, when that endpoint exists. */
  census?(): unknown
  /** ocspStatus: a certificate's OCSP state, where this process keeps staples. */
  ocspStatus?(cert: LoadedCertificate): OcspStatus
}

/**
 * runtimeDashboardSource is the source of one process's own snapshot (a single process, or one cluster worker):
 * its registry, generation, ports, OCSP states, and its census when a listener counts one (with no listener
 * counting, metrics.enabled false or census_window 0, the page gets none and hides the panel).
 */
export function runtimeDashboardSource(
  runtime: Pick<DashboardSource, "state" | "generation"> & {
    ports(): Record<string, number>
    ocspStatus(cert: LoadedCertificate): OcspStatus
  },
  instances?: () => unknown,
): DashboardSource {
  return {
    state: runtime.state,
    get generation() {
      return runtime.generation
    },
    ports: () => runtime.ports(),
    census: () => {
      const census = runtime.generation?.census()
      return census && Object.keys(census.listeners).length > 0 ? census : undefined
    },
    ...(instances && { instances }),
    ocspStatus: (c) => runtime.ocspStatus(c),
  }
}

/** DashboardData: one snapshot as GET /dashboard/data answers it. */
export type DashboardData = ReturnType<typeof dashboardData>

/** LatencyTotals: one upstream's histogram, cumulative counts per bound (the last is +Inf), as the page needs them. */
export interface LatencyTotals {
  counts: number[]
  sum: number
  count: number
}

/** How many recent handshake failures the page lists (GET /tls/failures has the last 100). */
const RECENT_FAILURES = 10

type Counts = Record<string, number>

/** dashboardData builds one snapshot; every count is a total since start (reloads keep them), never a rate. */
export function dashboardData(source: DashboardSource, now = Date.now()) {
  const requests: Counts = {}
  const handshakes: Counts = { full: 0, resumed: 0 }
  const versions: Counts = {}
  const ciphers: Counts = {}
  const failures: Counts = {}
  const backendErrors: Counts = {}
  const backendErrorsByKind: Counts = {}
  const accepted: Counts = {}
  let bounds: number[] = []
  const firstByte: Record<string, LatencyTotals> = {}
  const connect: Record<string, LatencyTotals> = {}
  for (const f of source.state.registry.snapshot()) {
    for (const s of f.series) {
      const l = s.labels
      const v = s.value ?? 0
      switch (f.name) {
        case "portcullis_http_requests_total":
          add(requests, l["status_class"]!, v)
          break
        case "portcullis_tls_handshakes_total":
          add(handshakes, l["handshake"]!, v)
          add(versions, l["version"]!, v)
          add(ciphers, l["cipher"]!, v)
          break
        case "portcullis_tls_handshake_failures_total":
          add(failures, l["reason"]!, v)
          break
        case "portcullis_backend_errors_total":
          add(backendErrors, `${l["upstream"]}\u0000${l["backend"]}`, v)
          add(backendErrorsByKind, l["kind"]!, v)
          break
        case "portcullis_listener_connections_total":
          add(accepted, l["listener"]!, v)
          break
        case "portcullis_http_first_byte_seconds":
          bounds = addHistogram(firstByte, l["upstream"]!, s)
          break
        case "portcullis_backend_connect_duration_seconds":
          bounds = addHistogram(connect, l["upstream"]!, s)
          break
      }
    }
  }
  const gen = source.generation
  const ports = source.ports?.() ?? {}
  const listeners = []
  const upstreams = []
  if (gen) {
    for (const l of gen.listeners.values()) {
      const name = l.config.name
      listeners.push({
        name,
        address: `${l.config.address.host}:${ports[name] ?? l.config.address.port}`,
        tls: l instanceof TlsListener,
        connections: l instanceof TlsListener ? l.engine.connections : 0,
        accepted: accepted[name] ?? 0,
      })
    }
    for (const u of gen.upstreams.values()) {
      const s = u.status()
      const health = new Map((s.health ?? []).map((h) => [h.id, h]))
      const live = new Map(u.backends.map((b) => [b.id, b]))
      upstreams.push({
        name: s.name,
        balance: s.balance,
        queue: s.queue,
        backends: s.backends.map((b) => {
          const h = health.get(b.id)
          return {
            id: b.id,
            state: b.state,
            backup: b.backup,
            ejected: b.ejected,
            in_flight: b.in_flight,
            max_connections: b.max_connections,
            errors: backendErrors[`${s.name}\u0000${b.id}`] ?? 0,
            // Totals for this generation's Backend (a reload starts them again: the page skips a drop).
            responses: live.get(b.id)?.responses ?? 0,
            first_byte_seconds: live.get(b.id)?.firstByteSeconds ?? 0,
            health: h && { healthy: h.healthy, last_error: h.last_error, last_duration_ms: h.last_duration_ms },
          }
        }),
      })
    }
  }
  return {
    time: now,
    generation: gen?.id ?? 0,
    loaded_at: gen?.createdAt.toISOString(),
    requests,
    handshakes,
    versions,
    ciphers,
    failures,
    backend_errors: backendErrorsByKind,
    latency: { bounds, first_byte: firstByte, connect },
    listeners,
    upstreams,
    certificates: certificateList(gen, source.ocspStatus ? (c) => source.ocspStatus!(c) : undefined, now).certificates,
    recent_failures: source.state.instruments.failures
      .recent()
      .slice(0, RECENT_FAILURES)
      .map((f) => ({ time: f.time, listener: f.listener, reason: f.reason, sni: f.sni ?? null, client: f.client })),
    instances: source.instances?.() ?? null,
    census: source.census?.() ?? null,
  }
}

function add(counts: Counts, key: string, v: number): void {
  counts[key] = (counts[key] ?? 0) + v
}

/** addHistogram sums a series into its upstream's totals (a route's series are summed); returns the finite bounds. */
function addHistogram(into: Record<string, LatencyTotals>, key: string, s: MetricSnapshot["series"][number]): number[] {
  const buckets = s.buckets ?? []
  let t = into[key]
  if (!t) {
    t = { counts: buckets.map(() => 0), sum: 0, count: 0 }
    into[key] = t
  }
  for (let i = 0; i < buckets.length; i++) t.counts[i] = (t.counts[i] ?? 0) + buckets[i]!.count
  t.sum += s.sum ?? 0
  t.count += s.count ?? 0
  // JSON has no Infinity: the page takes the last count as the +Inf bucket.
  return buckets.slice(0, -1).map((b) => b.le)
}

/**
 * DashboardFeed serialises at most one snapshot per `periodMs` and hands the same text to every poll in that time:
 * the server's cost is one snapshot a second whether one page or fifty are open, and it holds no timer or
 * per-viewer state (nothing to leak when a tab closes). A build may be a promise (a cluster primary asks its
 * workers): polls in its second share that one promise, and a build that failed is tried again by the next poll.
 */
export class DashboardFeed {
  readonly #build: () => unknown
  readonly #periodMs: number
  #at = Number.NEGATIVE_INFINITY
  #text = ""
  #pending: Promise<string> | undefined
  /** builds counts the snapshots made (the tests read it to prove sharing). */
  builds = 0

  constructor(build: () => unknown, periodMs = 1000) {
    this.#build = build
    this.#periodMs = periodMs
  }

  text(now = Date.now()): string | Promise<string> {
    if (now - this.#at < this.#periodMs && now >= this.#at) return this.#pending ?? this.#text
    this.#at = now
    this.builds++
    const built = this.#build()
    if (!(built instanceof Promise)) {
      this.#pending = undefined
      this.#text = JSON.stringify(built)
      return this.#text
    }
    const pending: Promise<string> = built.then(
      (value: unknown) => {
        if (this.#pending === pending) this.#pending = undefined
        this.#text = JSON.stringify(value)
        return this.#text
      },
      (err: unknown) => {
        if (this.#pending === pending) {
          this.#pending = undefined
          this.#at = Number.NEGATIVE_INFINITY
        }
        throw err
      },
    )
    this.#pending = pending
    return pending
  }
}
