/** The request's balancing keys: hash_key compiled and read, the sticky cookie read and set (balancers/). */
import assert from "node:assert/strict"
import { describe, test } from "node:test"
import { compileHashKey, hashKeyOf, readCookie } from "../../src/upstreams/balancers/hash-key.ts"
import { RoundRobin } from "../../src/upstreams/balancers/round-robin.ts"
import { addStickyCookie, StickyCookie } from "../../src/upstreams/balancers/sticky-cookie.ts"
import { makeBackends } from "./balancer.contract.ts"

test("hash_key compiles; header names are matched lower case", () => {
  assert.deepEqual(compileHashKey("client_ip"), { kind: "client_ip" })
  assert.deepEqual(compileHashKey("path"), { kind: "path" })
  assert.deepEqual(compileHashKey("header:X-Tenant"), { kind: "header", name: "x-tenant" })
  assert.deepEqual(compileHashKey("cookie:session"), { kind: "cookie", name: "session" })
})

describe("hashKeyOf", () => {
  const req = {
    url: "/cart/items?page=2",
    headers: { "x-tenant": "acme", "x-multi": ["a", "b"], cookie: "theme=dark; session=s-42" },
  }
  test("reads the client address, the path without its query, a header, a cookie", () => {
    assert.equal(hashKeyOf(compileHashKey("client_ip"), req, "192.0.2.7"), "192.0.2.7")
    assert.equal(hashKeyOf(compileHashKey("path"), req, "192.0.2.7"), "/cart/items")
    assert.equal(hashKeyOf(compileHashKey("path"), { headers: {} }, "192.0.2.7"), "/")
    assert.equal(hashKeyOf(compileHashKey("header:X-Tenant"), req, "192.0.2.7"), "acme")
    assert.equal(hashKeyOf(compileHashKey("header:x-multi"), req, "192.0.2.7"), "a,b")
    assert.equal(hashKeyOf(compileHashKey("cookie:session"), req, "192.0.2.7"), "s-42")
  })
  test("a missing header or cookie is undefined (the balancer falls back to round robin)", () => {
    assert.equal(hashKeyOf(compileHashKey("header:x-none"), req, "192.0.2.7"), undefined)
    assert.equal(hashKeyOf(compileHashKey("cookie:none"), req, "192.0.2.7"), undefined)
  })
})

describe("readCookie", () => {
  test("finds one cookie among several, trimming spaces; HTTP/2's separate cookie fields are joined", () => {
    assert.equal(readCookie("a=1; srv=abc ;b=2", "srv"), "abc")
    assert.equal(readCookie(["a=1", "srv=xyz"], "srv"), "xyz")
    assert.equal(readCookie("a=1", "srv"), undefined)
    assert.equal(readCookie(undefined, "srv"), undefined)
    assert.equal(readCookie("xsrv=1; srv=2", "srv"), "2", "a longer name that ends with it is not it")
    assert.equal(readCookie("srv", "srv"), undefined, "a cookie without = has no value")
  })
})

describe("addStickyCookie", () => {
  const backends = makeBackends([1, 1])
  const sticky = new StickyCookie(new RoundRobin(), "srv")
  test("sets the cookie naming the backend that answered, beside the backend's own Set-Cookie", () => {
    const out: Record<string, string | string[]> = { "set-cookie": "app=1" }
    addStickyCookie(out, sticky, backends[1]!, undefined)
    assert.deepEqual(out["set-cookie"], ["app=1", sticky.cookieFor(backends[1]!)])
    const alone: Record<string, string | string[]> = {}
    addStickyCookie(alone, sticky, backends[0]!, sticky.valueFor(backends[1]!))
    assert.equal(alone["set-cookie"], sticky.cookieFor(backends[0]!))
  })
  test("adds nothing when the request's cookie already names that backend", () => {
    const out: Record<string, string | string[]> = {}
    addStickyCookie(out, sticky, backends[0]!, sticky.valueFor(backends[0]!))
    assert.deepEqual(out, {})
  })
})
