/** MetricsRegistry: names, counters, histogram buckets, label bounds, re-registration across generations, snapshot. */
import assert from "node:assert/strict"
import { test } from "node:test"
import { Histogram, MetricsRegistry, OVERFLOW } from "../../src/state/registry.ts"

test("a counter child is looked up once and counts by field add; the same labels give the same child", () => {
  const r = new MetricsRegistry()
  const family = r.counter("portcullis_tls_handshakes_total", "handshakes", { labels: ["listener"] })
  const web = family.child("web")
  web.inc()
  web.inc(2)
  assert.equal(family.child("web"), web)
  assert.equal(web.value, 3)
  assert.equal(family.child("api").value, 0)
})

test("registering a name again (a new generation) returns the same family, so counts carry over", () => {
  const r = new MetricsRegistry()
  r.counter("portcullis_upstream_retries_total", "retries", { labels: ["upstream"] })
    .child("app")
    .inc()
  const again = r.counter("portcullis_upstream_retries_total", "retries", { labels: ["upstream"] })
  assert.equal(again.child("app").value, 1)
})

test("a name registered as another type or with other labels is refused", () => {
  const r = new MetricsRegistry()
  r.counter("portcullis_tls_handshakes_total", "x", { labels: ["listener"] })
  assert.throws(() => r.gauge("portcullis_tls_handshakes_total", "x", { labels: ["listener"] }), RangeError)
  assert.throws(() => r.counter("portcullis_tls_handshakes_total", "x", { labels: ["address"] }), RangeError)
})

test("names must read portcullis_<area>_<thing>_<unit> in snake_case, counters end in _total", () => {
  const r = new MetricsRegistry()
  for (const bad of [
    "tls_handshakes_total",
    "portcullis_tlsHandshakes_total",
    "portcullis_total",
    "portcullis-x_total",
  ]) {
    assert.throws(() => r.counter(bad, "x"), RangeError, bad)
  }
  assert.throws(() => r.counter("portcullis_tls_handshakes", "x"), /_total/)
  assert.throws(() => r.gauge("portcullis_backend_up", "x", { labels: ["Backend"] }), /label/)
  assert.doesNotThrow(() => r.gauge("portcullis_backend_up", "x", { labels: ["upstream", "backend"] }))
})

test("a child takes exactly one value per label name", () => {
  const family = new MetricsRegistry().gauge("portcullis_backend_up", "up", { labels: ["upstream", "backend"] })
  assert.throws(() => family.child("app"), RangeError)
  family.child("app", "127.0.0.1:3000").set(1)
  family.child("app", "127.0.0.1:3000").dec()
  assert.equal(family.child("app", "127.0.0.1:3000").value, 0)
})

test("label sets are bounded: past maxSeries new combinations share one overflow series", () => {
  const family = new MetricsRegistry().counter("portcullis_client_refused_requests_total", "x", {
    labels: ["address"],
    maxSeries: 3,
  })
  for (let i = 0; i < 3; i++) family.child(`10.0.0.${i}:443`).inc()
  for (let i = 3; i < 100; i++) family.child(`10.0.0.${i}:443`).inc()
  // 3 real series plus the overflow one, whatever the number of distinct values.
  assert.equal(family.size, 4)
  assert.equal(family.child("10.0.0.50:443"), family.child("10.0.0.99:443"))
  const overflow = family.snapshot().series.find((s) => s.labels["address"] === OVERFLOW)
  assert.equal(overflow?.value, 97)
  // Series made before the bound keep counting on their own.
  family.child("10.0.0.1:443").inc()
  assert.equal(family.snapshot().series.find((s) => s.labels["address"] === "10.0.0.1:443")?.value, 2)
})

test("histogram buckets: le bounds are inclusive, above the last goes to +Inf; the snapshot is cumulative", () => {
  const family = new MetricsRegistry().histogram("portcullis_request_duration_seconds", "d", {
    labels: ["listener"],
    buckets: [0.1, 0.5, 1],
  })
  const h = family.child("web")
  // Table: value -> bucket index it lands in.
  const table: [number, number][] = [
    [0, 0],
    [0.1, 0],
    [0.10001, 1],
    [0.5, 1],
    [0.7, 2],
    [1, 2],
    [3, 3],
  ]
  for (const [value] of table) h.observe(value)
  const perBucket = [0, 0, 0, 0]
  for (const [, index] of table) perBucket[index]!++
  assert.deepEqual([...h.counts], perBucket)
  const [series] = family.snapshot().series
  assert.deepEqual(series?.buckets, [
    { le: 0.1, count: 2 },
    { le: 0.5, count: 4 },
    { le: 1, count: 6 },
    { le: Number.POSITIVE_INFINITY, count: 7 },
  ])
  assert.equal(series?.count, 7)
  assert.ok(Math.abs((series?.sum ?? 0) - 5.40001) < 1e-9)
})

test("histogram buckets must ascend; the default buckets span 1 ms to 10 s", () => {
  const r = new MetricsRegistry()
  assert.throws(() => r.histogram("portcullis_x_seconds", "x", { buckets: [1, 0.5] }), /ascend/)
  const h = r.histogram("portcullis_tls_handshake_duration_seconds", "x").child()
  assert.ok(h instanceof Histogram)
  assert.equal(h.bounds[0], 0.001)
  assert.equal(h.bounds.at(-1), 10)
})

test("snapshot walks every family in registration order with help, type and labelled series", () => {
  const r = new MetricsRegistry()
  r.counter("portcullis_tls_handshakes_total", "TLS handshakes completed", { labels: ["listener"] })
    .child("web")
    .inc()
  r.gauge("portcullis_ticket_keys", "keys in the ring").child().set(3)
  assert.deepEqual(r.snapshot(), [
    {
      name: "portcullis_tls_handshakes_total",
      help: "TLS handshakes completed",
      type: "counter",
      series: [{ labels: { listener: "web" }, value: 1 }],
    },
    { name: "portcullis_ticket_keys", help: "keys in the ring", type: "gauge", series: [{ labels: {}, value: 3 }] },
  ])
})
