/**
 * @module aggregate: one view over the workers of a cluster: their /status snapshots merged (counts summed, the rest
 * taken from the first worker) and their metric families merged series by series (counters and histograms summed).
 */
import { PROCESS_GAUGES } from "../admin/process-metrics.ts"
import type { MetricSnapshot, SeriesSnapshot } from "../state/registry.ts"

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
])

/** mergeStatus merges workers' status snapshots (same config, so lists line up by index). */
export function mergeStatus(snapshots: readonly unknown[]): unknown {
  if (snapshots.length === 0) return {}
  return snapshots.slice(1).reduce((acc, s) => merge(acc, s, undefined), structuredClone(snapshots[0]))
}

function merge(a: unknown, b: unknown, key: string | undefined): unknown {
  if (typeof a === "number" && typeof b === "number") return key !== undefined && SUMMED.has(key) ? a + b : a
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
