/** Router: (SNI, Host, path) -> route, as a table: exact and wildcard hosts, path prefixes, the default route, order. */
import assert from "node:assert/strict"
import { test } from "node:test"
import { normalizeHost, pathHasPrefix, Router } from "../../src/routing/router.ts"

// First match wins, in this order. Route names are their upstreams.
const router = new Router([
  { hosts: ["api.example.com"], path_prefix: "/v1", upstream: "api-v1" },
  { hosts: ["api.example.com"], upstream: "api" },
  { hosts: ["*.example.com"], path_prefix: "/static/", upstream: "static" },
  { hosts: ["*.example.com", "example.org"], upstream: "sites" },
  { hosts: ["*"], path_prefix: "/health", upstream: "health" },
  { path_prefix: "/.well-known/", upstream: "wellknown" },
  { upstream: "default" },
])

/**
 * [what, Host header (or SNI on a tcp listener), path, upstream]. The engines pass normalizeHost(Host) on http
 * listeners and normalizeHost(SNI) on tcp ones (path "/"); the router sees one host either way.
 */
const table: [string, string | undefined, string, string | undefined][] = [
  ["exact host and its prefix", "api.example.com", "/v1/users", "api-v1"],
  ["the prefix itself", "api.example.com", "/v1", "api-v1"],
  ["a prefix followed by a query", "api.example.com", "/v1?x=1", "api-v1"],
  ["a longer segment is not the prefix", "api.example.com", "/v10", "api"],
  ["exact host, other path: the next route of that host", "api.example.com", "/other", "api"],
  ["Host with a port and upper case", "API.Example.COM:8443", "/v1/x", "api-v1"],
  ["Host with a trailing dot", "api.example.com.", "/v1", "api-v1"],
  ["wildcard host with a trailing-slash prefix", "www.example.com", "/static/app.js", "static"],
  ["a trailing-slash prefix does not take the bare folder", "www.example.com", "/static", "sites"],
  ["wildcard host, other path", "www.example.com", "/", "sites"],
  ["a wildcard is one label deep", "a.b.example.com", "/", "default"],
  ["a wildcard does not take its own apex", "example.com", "/", "default"],
  ["an exact host beside a wildcard in one route", "example.org", "/", "sites"],
  ["hosts: [*] takes any host", "anything.test", "/health", "health"],
  ["hosts: [*] takes a request without a Host", undefined, "/health", "health"],
  ["a route without hosts takes any host on its prefix", "unknown.test", "/.well-known/acme", "wellknown"],
  ["an earlier route wins: *.example.com (3) before hosts: [*] /health (4)", "www.example.com", "/health", "sites"],
  ["nothing else matches: the default route", "unknown.test", "/", "default"],
  ["no Host at all: the default route", undefined, "/x", "default"],
  ["IPv6 literal Host", "[::1]:8443", "/", "default"],
]

for (const [what, host, path, upstream] of table) {
  test(`${what}: ${host ?? "(no host)"} ${path} -> ${upstream ?? "404"}`, () => {
    assert.equal(router.match(normalizeHost(host), path)?.upstream, upstream)
  })
}

test("without a default route, an unmatched request has no route (404)", () => {
  const strict = new Router([{ hosts: ["a.test"], upstream: "a" }])
  assert.equal(strict.match("b.test", "/"), undefined)
  assert.equal(strict.match("a.test", "/")?.upstream, "a")
})

test("a route's index is its place in the config", () => {
  assert.deepEqual(
    router.routes.map((r) => r.index),
    [0, 1, 2, 3, 4, 5, 6],
  )
  assert.equal(router.match("www.example.com", "/")?.index, 3)
})

test("normalizeHost and pathHasPrefix, the pieces the table relies on", () => {
  assert.equal(normalizeHost("[::1]:8443"), "[::1]")
  assert.equal(normalizeHost("Example.COM."), "example.com")
  assert.equal(normalizeHost(undefined), "")
  assert.equal(pathHasPrefix("/v1/x", "/v1"), true)
  assert.equal(pathHasPrefix("/v1x", "/v1"), false)
  assert.equal(pathHasPrefix("/", "/"), true)
})
