/**
 * @module process-metrics: the process's memory at scrape time, under the names prom-client's default metrics use
 * (process_resident_memory_bytes, nodejs_heap_size_*_bytes, nodejs_external_memory_bytes), so existing dashboards
 * for Node services read them; plus the ArrayBuffer share of external memory, which prom-client does not export.
 */
import v8 from "node:v8"
import type { MetricSnapshot } from "../state/registry.ts"

/** PROCESS_GAUGES are per process: across cluster workers they add up (cluster/aggregate.ts). */
export const PROCESS_GAUGES = [
  "process_resident_memory_bytes",
  "nodejs_heap_size_total_bytes",
  "nodejs_heap_size_used_bytes",
  "nodejs_external_memory_bytes",
  "nodejs_array_buffers_bytes",
  "nodejs_heap_space_size_total_bytes",
  "nodejs_heap_space_size_used_bytes",
] as const

/**
 * processMetrics reads process.memoryUsage() and V8's heap spaces once (a walk of a few spaces: cheap, and a scrape
 * is no hot path). The spaces say which part of the heap holds what it committed (new space grows under load).
 */
export function processMetrics(): MetricSnapshot[] {
  const m = process.memoryUsage()
  const spaces = v8.getHeapSpaceStatistics()
  const one = (name: string, help: string, value: number): MetricSnapshot => ({
    name,
    help,
    type: "gauge",
    series: [{ labels: {}, value }],
  })
  return [
    one("process_resident_memory_bytes", "resident memory size in bytes (RSS)", m.rss),
    one("nodejs_heap_size_total_bytes", "V8 heap size in bytes", m.heapTotal),
    one("nodejs_heap_size_used_bytes", "V8 heap used in bytes", m.heapUsed),
    one(
      "nodejs_external_memory_bytes",
      "memory of C++ objects bound to JavaScript objects (Buffers, TLS, zlib) in bytes",
      m.external,
    ),
    one("nodejs_array_buffers_bytes", "memory of ArrayBuffers and Buffers in bytes (part of external)", m.arrayBuffers),
    {
      name: "nodejs_heap_space_size_total_bytes",
      help: "V8 heap space size in bytes, by space",
      type: "gauge",
      series: spaces.map((s) => ({ labels: { space: spaceName(s.space_name) }, value: s.space_size })),
    },
    {
      name: "nodejs_heap_space_size_used_bytes",
      help: "V8 heap space used in bytes, by space",
      type: "gauge",
      series: spaces.map((s) => ({ labels: { space: spaceName(s.space_name) }, value: s.space_used_size })),
    },
  ]
}

/** spaceName: "old_space" → "old", as prom-client labels them. */
function spaceName(v8Name: string): string {
  return v8Name.replace(/_space$/, "")
}
