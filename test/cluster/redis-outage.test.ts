/**
 * Redis down, hung and back (issue 12, item 4): a client making requests in a loop through two instances sees no
 * failure while redis-server is SIGSTOPped (hung), then SIGKILLed and restarted; each instance logs the loss once;
 * once it is back, a rotation on one instance reaches the other. An instance started while Redis is down serves
 * on its own keys and adopts the fleet's when Redis comes. Under load (h2load HTTP/1.1 and HTTP/2 on both instances
 * and the new-connection loop), redis-server SIGKILLed and restarted mid-run: 0 failed requests.
 */
import assert from "node:assert/strict"
import { execFile } from "node:child_process"
import { mkdtempSync, readFileSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { Writable } from "node:stream"
import { after, before, test } from "node:test"
import { pino } from "pino"
import { startEchoBackend, type TestBackend } from "../helpers/backends.ts"
import { request } from "../helpers/clients.ts"
import { createPki, type Pki } from "../helpers/pki.ts"
import { startRedis } from "../helpers/servers.ts"
import { waitUntil } from "../helpers/wait.ts"
import {
  connect,
  currentKey,
  type Instance,
  type RedisProcess,
  redisOn,
  startInstance,
  waitSameKey,
} from "./harness.ts"

let pki: Pki
let ca: Buffer
let echo: TestBackend
let redis: RedisProcess
let a: Instance
let b: Instance
let port: number
let yaml: string
/** Log lines of instance A (pino JSON). */
const aLog: string[] = []

function capture(lines: string[]) {
  return pino(
    { level: "debug" },
    new Writable({
      write(chunk: Buffer, _enc, done) {
        lines.push(...chunk.toString().split("\n").filter(Boolean))
        done()
      },
    }),
  )
}
const dir = mkdtempSync(join(tmpdir(), "pc-outage-"))

before(async () => {
  pki = await createPki()
  ca = readFileSync(pki.ca.certPath)
  echo = await startEchoBackend("echo")
  // Win a port with startRedis, then run our own redis-server there, which the test can SIGKILL and start again.
  const first = await startRedis()
  port = first.port
  await first.close()
  redis = redisOn(port, dir)
  await redis.start()
  const site = await pki.issue({ names: ["localhost"] })
  yaml = `
listeners:
  - name: web
    address: "127.0.0.1:0"
    tls: { certificates: [{ cert: ${site.certPath}, key: ${site.keyPath} }] }
    upstream: echo
upstreams:
  echo: { backends: ["127.0.0.1:${echo.port}"] }
`
  a = await startInstance(yaml, `redis://127.0.0.1:${port}`, capture(aLog))
  b = await startInstance(yaml, `redis://127.0.0.1:${port}`)
})

after(async () => {
  await a?.close()
  await b?.close()
  await redis?.kill()
  await echo?.close()
  await pki?.close()
  rmSync(dir, { recursive: true, force: true })
})

test("SIGKILL redis-server mid-run: 0 failed requests through both instances; a rotation after it returns reaches both", async () => {
  let ok = 0
  const failures: string[] = []
  let stop = false
  // Each request on a new connection (agent: false), alternating between the instances.
  const loop = (async () => {
    for (let i = 0; !stop && i < 100_000; i++) {
      const instance = i % 2 === 0 ? a : b
      try {
        const reply = await request({ port: instance.port(), ca, timeoutMs: 5000 })
        if (reply.status === 200) ok++
        else failures.push(`status ${reply.status}`)
      } catch (err) {
        failures.push(String(err))
      }
    }
  })()
  const after = async (n: number) => {
    const target = ok + n
    await waitUntil(() => ok >= target || failures.length > 0, `${n} more requests`, 20_000)
  }
  await after(20)
  // Hung: connections stay open and nothing answers; commands time out (2 s) and the connection is dropped.
  redis.signal("SIGSTOP")
  await waitUntil(() => !a.fleet!.status().connected, "A gave up on the hung store", 15_000)
  await after(20)
  redis.signal("SIGCONT")
  await waitUntil(() => a.fleet!.status().connected && b.fleet!.status().connected, "both reconnected", 15_000)
  await after(20)
  await redis.kill()
  await waitUntil(() => !a.fleet!.status().connected && !b.fleet!.status().connected, "both see the store gone")
  await after(40)
  await redis.start()
  await waitUntil(() => a.fleet!.status().connected && b.fleet!.status().connected, "both reconnected", 15_000)
  await after(20)
  const before = currentKey(b)
  const generations = [a.runtime.status().generation, b.runtime.status().generation]
  a.runtime.state.ticketKeys.rotate()
  await waitSameKey([a, b])
  // A rebuilt generation serves on each: its contexts carry the new key.
  await waitUntil(
    () => a.runtime.status().generation > generations[0]! && b.runtime.status().generation > generations[1]!,
    "both rebuilt with the new key",
  )
  assert.notEqual(currentKey(b), before, "B took A's rotation")
  await after(20)
  stop = true
  await loop
  assert.deepEqual(failures, [], `${ok} ok`)
  const lost = aLog.filter((l) => l.includes("fleet store unreachable"))
  assert.equal(lost.length, 2, `logged once per outage (hung, killed), not per request or retry:\n${lost.join("\n")}`)
  assert.equal(aLog.filter((l) => l.includes("fleet store is back")).length, 2)
  assert.ok(!aLog.some((l) => l.includes(a.runtime.state.ticketKeys.current().material.reveal().toString("base64"))))
  // B's contexts carry the new key: a ticket A issues now resumes on B.
  const fresh = await connect(a.port(), ca, "TLSv1.3")
  assert.equal((await connect(b.port(), ca, "TLSv1.3", fresh.session)).reused, true)
})

test("an instance started while Redis is down serves on its own keys, then adopts the fleet's", async () => {
  await redis.kill()
  const lonely = await startInstance(yaml, `redis://127.0.0.1:${port}`)
  try {
    assert.equal((await request({ port: lonely.port(), ca })).status, 200, "serves without the store")
    assert.notEqual(currentKey(lonely), currentKey(a), "on its own key meanwhile")
    await redis.start()
    // Redis came back empty: the first sync writes its ring (SET NX) and the others adopt it; all converge.
    await waitSameKey([a, b, lonely], 15_000)
    const fresh = await connect(a.port(), ca, "TLSv1.2")
    assert.equal((await connect(lonely.port(), ca, "TLSv1.2", fresh.session)).reused, true)
  } finally {
    await lonely.close()
  }
})

/** H2loadResult is what h2load's summary says: requests done, failed, errored, timed out, and 2xx answers. */
interface H2loadResult {
  done: number
  failed: number
  errored: number
  timeout: number
  ok2xx: number
  output: string
}

function h2load(port: number, args: string[]): Promise<H2loadResult> {
  return new Promise((resolve, reject) => {
    execFile("h2load", [...args, `https://127.0.0.1:${port}/`], { timeout: 60_000 }, (err, stdout) => {
      const m =
        /requests: \d+ total, \d+ started, (\d+) done, \d+ succeeded, (\d+) failed, (\d+) errored, (\d+) timeout/.exec(
          stdout,
        )
      const codes = /status codes: (\d+) 2xx/.exec(stdout)
      if (err || !m || !codes) return reject(new Error(`h2load: ${err?.message ?? ""}\n${stdout}`))
      resolve({
        done: Number(m[1]),
        failed: Number(m[2]),
        errored: Number(m[3]),
        timeout: Number(m[4]),
        ok2xx: Number(codes[1]),
        output: stdout,
      })
    })
  })
}

test("under load: h2load (HTTP/2 on A, HTTP/1.1 on B, back to back) and the loop, redis-server SIGKILLed and restarted mid-run: 0 failed", async (t) => {
  let ok = 0
  const failures: string[] = []
  let stop = false
  // h2load runs of 300 requests back to back until the events are over, so the load covers them however slow the
  // machine is. A logs at debug into an array (the access lines too), which slows it: the HTTP/2 load goes there.
  const repeat = async (port: number, args: string[]) => {
    const runs: H2loadResult[] = []
    while (!stop) runs.push(await h2load(port, [...args, "-n", "300"]))
    return runs
  }
  const load = Promise.all([repeat(a.port(), ["-c", "2", "-m", "8"]), repeat(b.port(), ["--h1", "-c", "2"])])
  load.catch(() => {}) // awaited below
  const loop = (async () => {
    for (let i = 0; !stop && i < 100_000; i++) {
      const instance = i % 2 === 0 ? a : b
      try {
        const reply = await request({ port: instance.port(), ca, timeoutMs: 5000 })
        if (reply.status === 200) ok++
        else failures.push(`status ${reply.status}`)
      } catch (err) {
        failures.push(String(err))
      }
    }
  })()
  const more = async (n: number) => {
    const target = ok + n
    await waitUntil(() => ok >= target || failures.length > 0, `${n} more requests`, 20_000)
  }
  try {
    await more(10)
    await redis.kill()
    await waitUntil(() => !a.fleet!.status().connected && !b.fleet!.status().connected, "both see the store gone")
    await more(10)
    await redis.start()
    await waitUntil(() => a.fleet!.status().connected && b.fleet!.status().connected, "both reconnected", 15_000)
    await more(10)
  } finally {
    stop = true
  }
  await loop
  const [h2, h1] = await load
  assert.deepEqual(failures, [], `${ok} ok`)
  const sum = (runs: H2loadResult[]) => runs.reduce((n, r) => n + r.done, 0)
  t.diagnostic(`h2load: ${sum(h2)} HTTP/2 requests on A, ${sum(h1)} HTTP/1.1 on B; the loop ${ok}`)
  for (const [name, runs] of [
    ["HTTP/2 on A", h2],
    ["HTTP/1.1 on B", h1],
  ] as const) {
    assert.ok(runs.length > 0)
    for (const r of runs) {
      assert.equal(r.failed + r.errored + r.timeout, 0, `${name}:\n${r.output}`)
      assert.equal(r.ok2xx, r.done, `${name}: every answer 2xx`)
      assert.equal(r.done, 300, `${name}: every request done`)
    }
  }
})
