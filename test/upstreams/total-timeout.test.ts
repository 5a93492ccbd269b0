/** The upstream's `timeouts.total` on the http engine: 504 before the response began, a broken response after; off by default. */
import assert from "node:assert/strict"
import http from "node:http"
import https from "node:https"
import type net from "node:net"
import { after, before, describe, test } from "node:test"
import { parseConfig } from "../../src/config/load.ts"
import { request } from "../helpers/clients.ts"
import { createPki, type Pki } from "../helpers/pki.ts"
import { type RunningPortcullis, startPortcullis } from "../helpers/portcullis.ts"
import { waitUntil } from "../helpers/wait.ts"
import { upstreamStatus } from "./harness.ts"

interface StallingBackend {
  port: number
  /** Requests whose connection the backend saw close before it answered them in full. */
  abandoned: () => number
  close: () => Promise<void>
}

/**
 * startStallingBackend: /headers-stall never answers; /body-stall sends the headers and part of the body, then
 * nothing; /slow?ms=N answers "slow" after N ms; anything else "ok".
 */
async function startStallingBackend(): Promise<StallingBackend> {
  let abandoned = 0
  const server = http.createServer((req, res) => {
    const url = new URL(req.url ?? "/", "http://x")
    res.on("close", () => {
      if (!res.writableFinished) abandoned++
    })
    if (url.pathname === "/headers-stall") return
    if (url.pathname === "/body-stall") {
      res.writeHead(200, { "content-length": "100" })
      res.write("part of it")
      return
    }
    if (url.pathname === "/slow") {
      setTimeout(() => res.end("slow"), Number(url.searchParams.get("ms")))
      return
    }
    res.end("ok")
  })
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r))
  return {
    port: (server.address() as net.AddressInfo).port,
    abandoned: () => abandoned,
    close: () => {
      server.closeAllConnections()
      return new Promise((r) => server.close(() => r()))
    },
  }
}

let pki: Pki
let pc: RunningPortcullis
let backend: StallingBackend

before(async () => {
  pki = await createPki()
  const site = await pki.issue({ names: ["localhost", "total.test", "off.test"] })
  backend = await startStallingBackend()
  pc = await startPortcullis(`
listeners:
  - name: web
    address: 127.0.0.1:0
    tls: { certificates: [{ cert: ${site.certPath}, key: ${site.keyPath} }] }
    routes:
      - { hosts: [total.test], upstream: total }
      - { hosts: [off.test], upstream: off }
upstreams:
  total:
    backends: ["127.0.0.1:${backend.port}"]
    timeouts: { total: 300ms, response: 60s, idle: 60s }
  off:
    backends: ["127.0.0.1:${backend.port}"]
    timeouts: { response: 60s, idle: 60s }
access_log: { enabled: false }
`)
})

after(async () => {
  await pc?.close()
  await backend?.close()
  await pki?.close()
})

describe("timeouts.total", () => {
  test("is off (0) by default", () => {
    const config = parseConfig(
      'listeners: [{ name: a, address: "127.0.0.1:1", tls: { certificates: [{ self_signed: [localhost] }] }, upstream: u }]\nupstreams: { u: { backends: ["127.0.0.1:2"] } }\n',
      "t.yaml",
      "/tmp",
    )
    assert.equal(config.upstreams.u!.timeouts.total, 0)
  })

  test("no response headers within it: 504, and the backend request is abandoned", async () => {
    const before = backend.abandoned()
    const reply = await request({ port: pc.port("web"), host: "total.test", path: "/headers-stall", ca: pki.ca.cert })
    assert.equal(reply.status, 504)
    assert.equal(reply.text, "Gateway Timeout\n")
    await waitUntil(() => backend.abandoned() === before + 1, "the backend saw its request cut")
    await waitUntil(() => upstreamStatus(pc, "total").backends[0]!.in_flight === 0, "the backend slot is released")
  })

  test("the response began but did not finish within it: the client sees a broken response, never a short whole one", async () => {
    const outcome = await new Promise<{ status: number; body: string; ended: boolean; error: string }>((resolve) => {
      const req = https.request(
        {
          host: "127.0.0.1",
          port: pc.port("web"),
          path: "/body-stall",
          servername: "localhost",
          headers: { host: "total.test" },
          ca: pki.ca.cert,
          agent: false,
          timeout: 10_000,
        },
        (res) => {
          let body = ""
          res.setEncoding("utf8")
          res.on("data", (c: string) => {
            body += c
          })
          res.once("end", () => resolve({ status: res.statusCode ?? 0, body, ended: true, error: "" }))
          res.once("aborted", () => resolve({ status: res.statusCode ?? 0, body, ended: false, error: "aborted" }))
          res.once("error", (err) => resolve({ status: res.statusCode ?? 0, body, ended: false, error: err.message }))
        },
      )
      req.on("timeout", () => req.destroy(new Error("client timeout")))
      req.on("error", (err) => resolve({ status: 0, body: "", ended: false, error: err.message }))
      req.end()
    })
    assert.equal(outcome.status, 200)
    assert.equal(outcome.body, "part of it")
    assert.equal(outcome.ended, false, "the response must not end as if it were whole")
    assert.notEqual(outcome.error, "client timeout", "cut by the proxy, not by the client's own deadline")
    await waitUntil(() => upstreamStatus(pc, "total").backends[0]!.in_flight === 0, "the backend slot is released")
  })

  test("a response that finishes within it is whole", async () => {
    const reply = await request({ port: pc.port("web"), host: "total.test", path: "/", ca: pki.ca.cert })
    assert.equal(reply.status, 200)
    assert.equal(reply.text, "ok")
  })

  test("off: a response slower than another upstream's total is served", async () => {
    const reply = await request({ port: pc.port("web"), host: "off.test", path: "/slow?ms=600", ca: pki.ca.cert })
    assert.equal(reply.status, 200)
    assert.equal(reply.text, "slow")
  })
})
