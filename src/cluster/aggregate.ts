/**
 * @module aggregate: one view over the workers of a cluster: their /status snapshots merged (counts summed, the rest
 * taken from the first worker), their metric families merged series by series (counters and histograms summed) and
 * their ClientHello censuses added up.
 */
import { PROCESS_GAUGES } from "../admin/process-metrics.ts"
import type { MetricSnapshot, SeriesSnapshot } from "../state/registry.ts"
import type { ListenerCensus } from "../tls/client-census.ts"

/**
 * SUMMED are the /status fields that count something per process (connections, requests, handshakes, in flight):
 * across workers they add up. Every other field (names, addresses, generation, ports, health, weights, times) is
 * the same in every worker, or a state, and is taken from the first.
 */
const SUMMED = new Set([
  "connections",
  "accepted",
  "handshakes",
  "handshake_errors",
  "proxy_header_errors",
  "in_flight",
  "retries",
  "queued",
  "queue_full",
  "queue_timeouts",
  "ejections",
  "tcp_rejected",
  "refused",
  "waiting",
  "requests",
  "times_ejected",
])

/**
 * Passive health is per process (each worker ejects on the failures it saw): a backend is `ejected` when some
 * worker has it ejected, until the latest of their `ejected_until`.
 */
const ANY = new Set(["ejected"])
const LATEST = new Set(["ejected_until"])

/** mergeStatus merges workers' status snapshots (same config, so lists line up by index). */
export function mergeStatus(snapshots: readonly unknown[]): unknown {
  if (snapshots.length === 0) return {}
  return snapshots.slice(1).reduce((acc, s) => merge(acc, s, undefined), structuredClone(snapshots[0]))
}

function merge(a: unknown, b: unknown, key: string | undefined): unknown {
  if (typeof a === "number" && typeof b === "number") {
    if (key === undefined) return a
    return SUMMED.has(key) ? a + b : LATEST.has(key) ? Math.max(a, b) : a
  }
  if (typeof a === "boolean" && typeof b === "boolean") return key !== undefined && ANY.has(key) ? a || b : a
  if (Array.isArray(a) && Array.isArray(b)) return a.map((x, i) => (i < b.length ? merge(x, b[i], key) : x))
  if (isRecord(a) && isRecord(b)) {
    for (const k of Object.keys(b)) a[k] = k in a ? merge(a[k], b[k], k) : b[k]
    return a
  }
  return a
}

/**
 * SUMMED_GAUGES are the live gauges that count per process (open connections, requests in flight, queued); the
 * other gauges are states the workers share (backend up, certificate expiry, generation): the highest is kept.
 */
const SUMMED_GAUGES = new Set([
  "portcullis_listener_open_connections",
  "portcullis_backend_in_flight_requests",
  "portcullis_upstream_queue_length",
  "portcullis_config_generations_draining",
  ...PROCESS_GAUGES,
])

/** mergeMetrics merges several processes' families: same name and labels, one series (summed; see SUMMED_GAUGES). */
export function mergeMetrics(sets: readonly (readonly MetricSnapshot[])[]): MetricSnapshot[] {
  const families = new Map<string, { family: MetricSnapshot; series: Map<string, SeriesSnapshot> }>()
  for (const set of sets) {
    for (const f of set) {
      let entry = families.get(f.name)
      if (!entry) {
        entry = { family: { ...f, series: [] }, series: new Map() }
        families.set(f.name, entry)
      }
      const sum = f.type !== "gauge" || SUMMED_GAUGES.has(f.name)
      for (const s of f.series) {
        const key = JSON.stringify(s.labels)
        const held = entry.series.get(key)
        if (!held) {
          const copy = structuredClone(s)
          entry.series.set(key, copy)
          entry.family.series.push(copy)
          continue
        }
        if (s.value !== undefined) held.value = sum ? (held.value ?? 0) + s.value : Math.max(held.value ?? 0, s.value)
        if (s.buckets && held.buckets) {
          for (let i = 0; i < held.buckets.length && i < s.buckets.length; i++) {
            held.buckets[i]!.count += s.buckets[i]!.count
          }
          held.sum = (held.sum ?? 0) + (s.sum ?? 0)
          held.count = (held.count ?? 0) + (s.count ?? 0)
        }
      }
    }
  }
  return [...families.values()].map((e) => e.family)
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === "object" && !Array.isArray(value)
}

/** CensusAnswer: GET /tls/clients's body, each TLS listener's census by name. */
export interface CensusAnswer {
  listeners: Record<string, ListenerCensus>
}

/**
 * mergeCensus adds the workers' censuses listener by listener: every field is a count of ClientHellos (clients,
 * the window's size and seen, each offer, each policy's refusals by reason), so the group's census is the sum and
 * a share (count / clients, as the page and docs/observability.md compute it) comes from the summed counts, never
 * from an average of the workers' shares. The window is then the last `census_window` hellos of each worker.
 */
export function mergeCensus(answers: readonly CensusAnswer[]): CensusAnswer {
  const listeners: Record<string, ListenerCensus> = {}
  for (const answer of answers) {
    for (const [name, c] of Object.entries(answer.listeners)) {
      const held = listeners[name]
      if (!held) {
        listeners[name] = structuredClone(c)
        continue
      }
      held.clients += c.clients
      held.window.size += c.window.size
      held.window.seen += c.window.seen
      for (const key of ["versions", "groups", "ciphers", "sigalgs"] as const) addCounts(held[key], c[key])
      for (const [policy, w] of Object.entries(c.whatif)) {
        const into = held.whatif[policy]
        if (!into) {
          held.whatif[policy] = structuredClone(w)
          continue
        }
        into.refused += w.refused
        if (w.reasons) into.reasons = addCounts(into.reasons ?? {}, w.reasons as Record<string, number>)
        for (const u of w.unjudged ?? []) {
          into.unjudged ??= []
          if (!into.unjudged.includes(u)) into.unjudged.push(u)
        }
      }
    }
  }
  // Most offered first, as one process's census lists them (client-census.ts named()).
  for (const c of Object.values(listeners)) {
    for (const key of ["versions", "groups", "ciphers", "sigalgs"] as const) {
      c[key] = Object.fromEntries(Object.entries(c[key]).sort((a, b) => b[1] - a[1]))
    }
  }
  return { listeners }
}

/** addCounts adds `from` into `into` key by key and returns `into`. */
export function addCounts(
  into: Record<string, number>,
  from: Readonly<Record<string, number>>,
): Record<string, number> {
  for (const [k, v] of Object.entries(from)) into[k] = (into[k] ?? 0) + v
  return into
}
