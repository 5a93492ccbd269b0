/** @module reload-memory: diagnosis: N reloads in-process with some traffic between, memory and live generations. */

import http from "node:http"
import http2 from "node:http2"
import https from "node:https"
import { parseArgs } from "node:util"
import v8 from "node:v8"
import vm from "node:vm"
import { startPortcullis } from "../test/helpers/portcullis.ts"

v8.setFlagsFromString("--expose-gc")
const gc = vm.runInNewContext("gc") as () => void
const { values: args } = parseArgs({
  options: {
    reloads: { type: "string", default: "100" },
    traffic: { type: "string", default: "1" },
    reload: { type: "string", default: "1" },
  },
})
const N = Number(args.reloads)
const traffic = args.traffic === "1"
const doReload = args.reload === "1"
const backend = http.createServer((req, res) => {
  req.resume()
  req.on("end", () => res.end("hello\n"))
})
await new Promise<void>((r) => backend.listen(0, "127.0.0.1", r))
const bport = (backend.address() as { port: number }).port
const yaml = (v: string) => `listeners:
  - name: web
    address: 127.0.0.1:0
    tls: { certificates: [{ self_signed: [localhost] }] }
    routes:
      - { path_prefix: /${v}, upstream: app }
      - { upstream: app }
  - name: tcp
    engine: tcp
    address: 127.0.0.2:0
    tls: { certificates: [{ self_signed: [localhost] }] }
    upstream: app
upstreams:
  app: { backends: ["127.0.0.1:${bport}"], retries: ${v === "a" ? 2 : 3} }
access_log: { enabled: false }
data_dir: /tmp/soak14/data
`
const pc = await startPortcullis(yaml("a"))
const port = pc.port("web")
const live = new Set<number>()
const fr = new FinalizationRegistry<number>((id) => live.delete(id))
const track = () => {
  const g = pc.runtime.generation!
  if (!live.has(g.id)) {
    live.add(g.id)
    fr.register(g, g.id)
  }
}
track()
const agent = new https.Agent({ keepAlive: true, rejectUnauthorized: false })
function h1(): Promise<void> {
  return new Promise((resolve) => {
    const req = https.request({ host: "127.0.0.1", port, agent, servername: "localhost", path: "/" }, (res) => {
      res.resume()
      res.on("end", resolve)
    })
    req.on("error", () => resolve())
    req.end()
  })
}
let session: http2.ClientHttp2Session | undefined
function h2(): Promise<void> {
  return new Promise((resolve) => {
    if (!session || session.closed || session.destroyed) {
      session = http2.connect(`https://127.0.0.1:${port}`, { rejectUnauthorized: false, servername: "localhost" })
      session.on("error", () => {})
    }
    try {
      const s = session.request({ ":path": "/" })
      s.on("error", () => resolve())
      s.resume()
      s.on("close", () => resolve())
      s.end()
    } catch {
      session = undefined
      resolve()
    }
  })
}
const mib = (n: number) => (n / 1048576).toFixed(1)
function report(i: number) {
  gc()
  gc()
  const m = process.memoryUsage()
  console.log(
    `${i} reloads: rss ${mib(m.rss)} heapUsed ${mib(m.heapUsed)} external ${mib(m.external)} arrayBuffers ${mib(m.arrayBuffers)} live generations ${live.size}`,
  )
}
report(0)
for (let i = 1; i <= N; i++) {
  if (doReload) {
    await pc.reload(yaml(i % 2 ? "b" : "a"))
    track()
  }
  if (traffic) for (let k = 0; k < 20; k++) await Promise.all([h1(), h2()])
  if (i % Math.max(1, Math.floor(N / 10)) === 0) {
    await new Promise((r) => setTimeout(r, 200))
    report(i)
  }
}
agent.destroy()
session?.destroy()
await pc.close()
backend.close()
await new Promise((r) => setTimeout(r, 500))
report(N)
console.log("live after close:", [...live])
