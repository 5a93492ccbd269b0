/**
 * Nothing thrown inside the exchange's backend-client callbacks may reach the backend client: the lean HTTP/1.1
 * client would rethrow it from a socket event and undici would emit it as an 'error' on its Client (no listener),
 * and either ends the process. Driven by a real failure: a log destination that throws (a full disk).
 */
import assert from "node:assert/strict"
import { after, before, test } from "node:test"
import pino from "pino"
import { parseConfig } from "../../../src/config/load.ts"
import { Runtime } from "../../../src/runtime.ts"
import { startEchoBackend, type TestBackend } from "../../helpers/backends.ts"
import { h2request, request } from "../../helpers/clients.ts"

let backend: TestBackend
let runtime: Runtime
let port: number
let thrown = 0
/** Set once started: the build's own warning (insecure_skip_verify) goes through. */
let failing = false

before(async () => {
  backend = await startEchoBackend("echo")
  // Warnings (a refused backend logs one) go to a destination that fails; everything else is dropped.
  const destination = {
    write(line: string) {
      if (failing && line.includes('"level":40')) {
        thrown++
        throw new Error("ENOSPC: no space left on device, write")
      }
    },
  }
  runtime = new Runtime(pino({ level: "info" }, destination))
  await runtime.start(
    parseConfig(
      `
listeners:
  - name: web
    address: 127.0.0.1:0
    tls: { certificates: [{ self_signed: [localhost, lean.test, undici.test] }] }
    routes:
      - { hosts: [lean.test], upstream: lean }
      - { hosts: [undici.test], upstream: undici }
      - { upstream: echo }
upstreams:
  echo: { backends: ["127.0.0.1:${backend.port}"] }
  lean: { backends: ["127.0.0.1:1"], retries: 0 }
  undici: { backends: ["127.0.0.1:1"], retries: 0, tls: { insecure_skip_verify: true } }
access_log: { enabled: false }
`,
      "test.yaml",
      "/tmp",
    ),
  )
  port = runtime.ports()["web"]!
  failing = true
})

after(async () => {
  await runtime?.close(200)
  await backend?.close()
})

const insecure = { rejectUnauthorized: false }

for (const host of ["lean.test", "undici.test"]) {
  test(`${host}: a throwing logger in the error path still answers 502 and the process keeps serving`, async () => {
    const before = thrown
    for (const send of [request, h2request]) {
      const reply = await send({ port, host, servername: host, path: "/x", tlsOptions: insecure })
      assert.equal(reply.status, 502)
    }
    assert.ok(thrown > before, "the logger did throw")
    const ok = await request({ port, path: "/after", tlsOptions: insecure })
    assert.equal(ok.status, 200)
  })
}
