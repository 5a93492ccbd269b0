/** @module reload-loop: diagnosis: POST /reload N times to a child Portcullis (idle), its memory gauges as it goes. */
import { mkdtempSync, writeFileSync } from "node:fs"
import http from "node:http"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { parseArgs } from "node:util"
import { runningPorts, spawnPortcullis } from "../test/helpers/portcullis.ts"

const { values: args } = parseArgs({
  options: { reloads: { type: "string", default: "200" }, bad: { type: "string", default: "1" } },
})
const N = Number(args.reloads)
const dir = mkdtempSync(join(tmpdir(), "pc-reload-loop-"))
const configPath = join(dir, "portcullis.yaml")
const config = (v: string) => `listeners:
  - name: web
    address: 127.0.0.1:0
    tls: { certificates: [{ self_signed: [localhost] }] }
    routes:
      - { path_prefix: /${v === "a" ? "a" : "b"}, upstream: ${v === "bad" ? "nowhere" : "app"} }
      - { upstream: app }
  - name: tcp
    engine: tcp
    address: 127.0.0.2:0
    tls: { certificates: [{ self_signed: [localhost] }] }
    upstream: app
upstreams:
  app: { backends: ["127.0.0.1:9"], retries: ${v === "a" ? 2 : 3} }
admin: { address: "127.0.0.3:0" }
access_log: { enabled: false }
data_dir: ${dir}/data
`
writeFileSync(configPath, config("a"))
const pc = spawnPortcullis(["--config", configPath], { env: { NODE_OPTIONS: process.env.CHILD_NODE_OPTIONS ?? "" } })
const ports = await runningPorts(pc, 30_000)
const admin = ports.admin!
function call(method: string, path: string): Promise<string> {
  return new Promise((resolve) => {
    const req = http.request({ host: "127.0.0.3", port: admin, method, path }, (res) => {
      let b = ""
      res.setEncoding("utf8")
      res.on("data", (d: string) => {
        b += d
      })
      res.on("end", () => resolve(b))
    })
    req.on("error", () => resolve(""))
    req.end()
  })
}
async function show(i: number): Promise<void> {
  const t = await call("GET", "/metrics")
  const g = (n: string) => (Number(new RegExp(`^${n} (\\S+)$`, "m").exec(t)?.[1] ?? 0) / 1048576).toFixed(1)
  const d = /^portcullis_config_generations_draining (\S+)$/m.exec(t)?.[1]
  console.log(
    `${i} reloads: rss ${g("process_resident_memory_bytes")} heap ${g("nodejs_heap_size_used_bytes")} ext ${g("nodejs_external_memory_bytes")} ab ${g("nodejs_array_buffers_bytes")} draining ${d}`,
  )
}
await show(0)
for (let i = 1; i <= N; i++) {
  const bad = args.bad === "1" && i % 3 === 2
  writeFileSync(configPath, config(bad ? "bad" : i % 2 ? "b" : "a"))
  await call("POST", "/reload")
  if (i % Math.max(1, Math.floor(N / 20)) === 0) await show(i)
  if ((process.env.SNAP_AT ?? "").split(",").includes(String(i))) {
    // --heapsnapshot-signal=SIGUSR2 in CHILD_NODE_OPTIONS; the write blocks the child, the next call waits for it.
    pc.child.kill("SIGUSR2")
    await new Promise((r) => setTimeout(r, 3000))
    await show(i)
  }
}
await pc.stop()
