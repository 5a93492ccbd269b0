/**
 * @module metrics-endpoint: GET /metrics in the Prometheus text exposition format 0.0.4, written from the registry's
 * snapshot plus the values read at scrape time (open connections, backend state, certificates, generation).
 */

import { TlsListener } from "../listeners/tls-listener.ts"
import type { Generation } from "../runtime.ts"
import type { MetricSnapshot, SeriesSnapshot } from "../state/registry.ts"
import type { LoadedCertificate } from "../tls/certificate.ts"
import type { OcspStatus } from "../tls/ocsp/stapler.ts"
import { processMetrics } from "./process-metrics.ts"

/** OCSP_STATES: every value of the OCSP status gauge's `status` label (one series per state, 1 for the current). */
const OCSP_STATES: readonly OcspStatus["status"][] = ["good", "revoked", "unknown", "failing", "pending", "none"]

/** CONTENT_TYPE is what Prometheus expects for the text format (exposition formats, "Text format details"). */
export const CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

/** renderMetrics writes families as `# HELP`, `# TYPE`, then one line per sample; histograms as _bucket/_sum/_count. */
export function renderMetrics(families: readonly MetricSnapshot[]): string {
  const out: string[] = []
  for (const f of families) {
    out.push(`# HELP ${f.name} ${escapeHelp(f.help)}`)
    out.push(`# TYPE ${f.name} ${f.type}`)
    for (const s of f.series) {
      if (f.type === "histogram") writeHistogram(out, f.name, s)
      else out.push(`${f.name}${labelText(s.labels)} ${formatValue(s.value ?? 0)}`)
    }
  }
  out.push("")
  return out.join("\n")
}

function writeHistogram(out: string[], name: string, s: SeriesSnapshot): void {
  for (const b of s.buckets ?? []) {
    out.push(`${name}_bucket${labelText(s.labels, formatValue(b.le))} ${formatValue(b.count)}`)
  }
  out.push(`${name}_sum${labelText(s.labels)} ${formatValue(s.sum ?? 0)}`)
  out.push(`${name}_count${labelText(s.labels)} ${formatValue(s.count ?? 0)}`)
}

function labelText(labels: Record<string, string>, le?: string): string {
  const parts: string[] = []
  for (const key in labels) parts.push(`${key}="${escapeLabel(labels[key]!)}"`)
  if (le !== undefined) parts.push(`le="${le}"`)
  return parts.length === 0 ? "" : `{${parts.join(",")}}`
}

/** Label values escape backslash, double quote and newline; HELP text backslash and newline (the format's rules). */
function escapeLabel(value: string): string {
  return value.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n")
}

function escapeHelp(value: string): string {
  return value.replace(/\\/g, "\\\\").replace(/\n/g, "\\n")
}

function formatValue(v: number): string {
  if (v === Number.POSITIVE_INFINITY) return "+Inf"
  if (v === Number.NEGATIVE_INFINITY) return "-Inf"
  if (Number.isNaN(v)) return "NaN"
  return String(v)
}

function gauge(name: string, help: string, series: SeriesSnapshot[]): MetricSnapshot {
  return { name, help, type: "gauge", series }
}

/** certificateSourceKind keeps the label bounded and path-free: file, self_signed or acme. */
export function certificateSourceKind(source: string): string {
  if (source.startsWith("self-signed")) return "self_signed"
  if (source.startsWith("acme")) return "acme"
  return "file"
}

/**
 * liveMetrics reads what is a state, not a count, from the current generation at scrape time, so a backend or
 * certificate that a reload removed leaves no stale series behind.
 */
export function liveMetrics(
  gen: Generation | undefined,
  ocspStatus?: (cert: LoadedCertificate) => OcspStatus,
  draining = 0,
): MetricSnapshot[] {
  const ocsp: SeriesSnapshot[] = []
  const open: SeriesSnapshot[] = []
  const up: SeriesSnapshot[] = []
  const ejected: SeriesSnapshot[] = []
  const inFlight: SeriesSnapshot[] = []
  const queue: SeriesSnapshot[] = []
  const notAfter: SeriesSnapshot[] = []
  if (gen) {
    for (const l of gen.listeners.values()) {
      if (!(l instanceof TlsListener)) continue
      const listener = l.config.name
      open.push({ labels: { listener }, value: l.engine.connections })
      // Two certificates with one first name and key type (one shadows the other: see the self-check) would give
      // one series twice, which the text format forbids: the first listed, the one served, speaks for both.
      const seen = new Set<string>()
      for (const c of l.certs.certificates()) {
        const series = `${c.names[0] ?? ""}\u0000${c.keyType}`
        if (seen.has(series)) continue
        seen.add(series)
        notAfter.push({
          labels: {
            listener,
            name: c.names[0] ?? "",
            key_type: c.keyType,
            source: certificateSourceKind(c.source),
          },
          value: Math.floor(c.notAfter.getTime() / 1000),
        })
        if (ocspStatus) {
          const current = ocspStatus(c).status
          const labels = { listener, name: c.names[0] ?? "", key_type: c.keyType }
          for (const status of OCSP_STATES)
            ocsp.push({ labels: { ...labels, status }, value: status === current ? 1 : 0 })
        }
      }
    }
    for (const u of gen.upstreams.values()) {
      const s = u.status()
      queue.push({ labels: { upstream: s.name }, value: s.queue.waiting })
      for (const b of s.backends) {
        const labels = { upstream: s.name, backend: b.id }
        up.push({ labels, value: b.state === "up" ? 1 : 0 })
        ejected.push({ labels, value: b.ejected ? 1 : 0 })
        inFlight.push({ labels, value: b.in_flight })
      }
    }
  }
  return [
    gauge("portcullis_listener_open_connections", "client connections open now", open),
    gauge("portcullis_backend_up", "1 when the backend is in service (not down, not draining)", up),
    gauge("portcullis_backend_ejected", "1 while passive health has the backend ejected", ejected),
    gauge("portcullis_backend_in_flight_requests", "requests the backend holds now", inFlight),
    gauge("portcullis_upstream_queue_length", "requests waiting for a backend slot now", queue),
    gauge("portcullis_tls_certificate_not_after_seconds", "certificate expiry, Unix seconds", notAfter),
    gauge(
      "portcullis_tls_certificate_ocsp_status",
      "1 for the certificate's OCSP state now (good, revoked, unknown, failing: no answer lately, pending, none: no responder or stapling off)",
      ocsp,
    ),
    gauge("portcullis_config_generation", "the running config generation (1 at start, +1 per reload)", [
      { labels: {}, value: gen?.id ?? 0 },
    ]),
    gauge(
      "portcullis_config_generations_draining",
      "older generations a reload replaced that are still finishing their connections",
      [{ labels: {}, value: draining }],
    ),
    ...processMetrics(),
  ]
}

/** ScrapeSource: what a scrape reads (the Runtime satisfies it). */
export interface ScrapeSource {
  readonly state: { readonly registry: { snapshot(): MetricSnapshot[] } }
  readonly generation: Generation | undefined
  /** how many replaced generations are still closing */
  readonly drainingGenerations?: number
  /** the OCSP state of a served certificate (the Runtime's stapler) */
  ocspStatus?(cert: LoadedCertificate): OcspStatus
}

/** scrape is the whole GET /metrics body: the registry's counts and histograms, then the live gauges. */
export function scrape(source: ScrapeSource): string {
  return renderMetrics([
    ...source.state.registry.snapshot(),
    ...liveMetrics(source.generation, source.ocspStatus && ((c) => source.ocspStatus!(c)), source.drainingGenerations),
  ])
}
