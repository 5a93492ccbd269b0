/**
 * @module process-metrics: the process's memory at scrape time, under the names prom-client's default metrics use
 * (process_resident_memory_bytes, nodejs_heap_size_*_bytes, nodejs_external_memory_bytes), so existing dashboards
 * for Node services read them; plus the ArrayBuffer share of external memory, which prom-client does not export.
 */
import type { MetricSnapshot } from "../state/registry.ts"

/** PROCESS_GAUGES are per process: across cluster workers they add up (cluster/aggregate.ts). */
export const PROCESS_GAUGES = [
  "process_resident_memory_bytes",
  "nodejs_heap_size_total_bytes",
  "nodejs_heap_size_used_bytes",
  "nodejs_external_memory_bytes",
  "nodejs_array_buffers_bytes",
] as const

/** processMetrics reads process.memoryUsage() once (it walks the heap spaces: cheap, not on the hot path). */
export function processMetrics(): MetricSnapshot[] {
  const m = process.memoryUsage()
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
  ]
}
