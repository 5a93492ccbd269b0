/**
 * @module aggregate-dashboard: GET /dashboard/data for a cluster: the workers' snapshots (dashboard/data.ts, each
 * made of totals) added up into the one the page charts, with the primary's generation, ports and instances.
 */
import type { DashboardData, LatencyTotals } from "../admin/dashboard/data.ts"
import { addCounts, type CensusAnswer, mergeCensus } from "./aggregate.ts"

/** PrimaryView: what the primary itself knows for the snapshot. */
export interface PrimaryView {
  time: number
  generation: number
  loaded_at: string | undefined
  ports: Record<string, number>
  instances: unknown
}

type Listener = DashboardData["listeners"][number]
type Upstream = DashboardData["upstreams"][number]
type Backend = Upstream["backends"][number]

/** How many recent handshake failures the page lists (as dashboard/data.ts). */
const RECENT_FAILURES = 10

/**
 * mergeDashboard adds the workers' snapshots: every count (requests, handshakes, versions, ciphers, failures by
 * reason, backend errors, latency histograms, accepts, open connections, in flight, queued, backend responses) is
 * summed; a backend is ejected when some worker ejected it (passive health is per worker); active health, states
 * and certificates are the same in every worker and taken from the first (the certificate rows carry the OCSP
 * state of the worker that staples); the recent failures are the newest of all; the census is mergeCensus's.
 */
export function mergeDashboard(snapshots: readonly DashboardData[], own: PrimaryView): DashboardData {
  const first = snapshots[0]
  const requests: Record<string, number> = {}
  const handshakes: Record<string, number> = { full: 0, resumed: 0 }
  const versions: Record<string, number> = {}
  const ciphers: Record<string, number> = {}
  const failures: Record<string, number> = {}
  const backendErrors: Record<string, number> = {}
  let bounds: number[] = []
  const firstByte: Record<string, LatencyTotals> = {}
  const connect: Record<string, LatencyTotals> = {}
  const listeners = new Map<string, Listener>()
  const upstreams = new Map<string, Upstream>()
  const censuses: CensusAnswer[] = []
  for (const s of snapshots) {
    addCounts(requests, s.requests)
    addCounts(handshakes, s.handshakes)
    addCounts(versions, s.versions)
    addCounts(ciphers, s.ciphers)
    addCounts(failures, s.failures)
    addCounts(backendErrors, s.backend_errors)
    if (bounds.length === 0) bounds = s.latency.bounds
    addLatency(firstByte, s.latency.first_byte)
    addLatency(connect, s.latency.connect)
    for (const l of s.listeners) {
      const held = listeners.get(l.name)
      if (!held) listeners.set(l.name, { ...l })
      else {
        held.connections += l.connections
        held.accepted += l.accepted
      }
    }
    for (const u of s.upstreams) {
      const held = upstreams.get(u.name)
      if (!held) {
        upstreams.set(u.name, structuredClone(u))
        continue
      }
      held.queue.waiting += u.queue.waiting
      for (const b of u.backends) {
        const into = held.backends.find((x) => x.id === b.id)
        if (into) addBackend(into, b)
        else held.backends.push(structuredClone(b))
      }
    }
    if (s.census) censuses.push(s.census as CensusAnswer)
  }
  for (const l of listeners.values()) {
    const port = own.ports[l.name]
    if (port !== undefined) l.address = `${l.address.slice(0, l.address.lastIndexOf(":"))}:${port}`
  }
  const recent = snapshots
    .flatMap((s) => s.recent_failures)
    .sort((a, b) => (a.time < b.time ? 1 : a.time > b.time ? -1 : 0))
    .slice(0, RECENT_FAILURES)
  return {
    time: own.time,
    generation: own.generation,
    loaded_at: own.loaded_at,
    requests,
    handshakes,
    versions,
    ciphers,
    failures,
    backend_errors: backendErrors,
    latency: { bounds, first_byte: firstByte, connect },
    listeners: [...listeners.values()],
    upstreams: [...upstreams.values()],
    certificates: first?.certificates ?? [],
    recent_failures: recent,
    instances: (own.instances ?? null) as DashboardData["instances"],
    census: censuses.length > 0 ? mergeCensus(censuses) : null,
  }
}

function addBackend(into: Backend, b: Backend): void {
  into.ejected = into.ejected || b.ejected
  into.in_flight += b.in_flight
  into.errors += b.errors
  into.responses += b.responses
  into.first_byte_seconds += b.first_byte_seconds
}

function addLatency(into: Record<string, LatencyTotals>, from: Readonly<Record<string, LatencyTotals>>): void {
  for (const [key, t] of Object.entries(from)) {
    const held = into[key]
    if (!held) {
      into[key] = { counts: [...t.counts], sum: t.sum, count: t.count }
      continue
    }
    for (let i = 0; i < t.counts.length; i++) held.counts[i] = (held.counts[i] ?? 0) + t.counts[i]!
    held.sum += t.sum
    held.count += t.count
  }
}
