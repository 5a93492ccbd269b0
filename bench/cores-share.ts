/**
 * @module cores-share: what two Portcullis processes on one core cost per full handshake, with and without the
 * cluster: one process, two independent one-process instances (each its own port and half the load tool's
 * threads, no primary, no IPC), and `cluster.workers: 2` (a primary and two workers on one socket), every process
 * pinned to core 1, the load tool and backend on core 0, in interleaved rounds. If the two independent processes
 * lose what the two workers lose, the loss is in running two processes on the core, not in the cluster's
 * coordination (issue 12). Prints W1 full handshakes per proxy CPU-second and each process's share.
 * `taskset -c 0 node bench/cores-share.ts [rounds]` (default 3; 10 s warm-up, 8 s window). Not part of `npm run bench`.
 */
import { execFileSync } from "node:child_process"
import { chmodSync, mkdtempSync, readFileSync, rmSync } from "node:fs"
import net from "node:net"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { startBackend } from "./lib/backend.ts"
import { makeCert } from "./lib/pki.ts"
import { cpuSeconds, processTree } from "./lib/proc.ts"
import { type RunningTarget, startTarget, TARGETS } from "./lib/targets.ts"
import { runHandshakes } from "./lib/tls-load.ts"

const rounds = Number(process.argv[2] ?? 3)
const WARMUP_S = 10
const MEASURE_S = 8
/** The load: THREADS tls-worker threads with CONCURRENCY connections each, split in two for the two instances. */
const THREADS = 4
const CONCURRENCY = 6
const CORE = "1"

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer()
    s.on("error", reject)
    s.listen(0, "127.0.0.1", () => {
      const port = (s.address() as net.AddressInfo).port
      s.close(() => resolve(port))
    })
  })
}

const dir = mkdtempSync(join(tmpdir(), "portcullis-cores-share-"))
// nginx (the backend) runs as nobody: it must reach its files
chmodSync(dir, 0o755)
const cert = makeCert(dir)
const backend = await startBackend(join(dir, "backend"), await freePort(), await freePort())

async function start(name: string, tag: string): Promise<RunningTarget> {
  const spec = TARGETS.find((t) => t.name === name)
  if (!spec) throw new Error(`no target ${name}`)
  const t = await startTarget(spec, {
    dir: join(dir, tag),
    port: await freePort(),
    backendPort: backend.port,
    h2cBackendPort: backend.h2cPort,
    cert,
  })
  for (const pid of processTree(t.process.pid))
    execFileSync("taskset", ["-a", "-pc", CORE, String(pid)], { stdio: "ignore" })
  return t
}

interface Share {
  handshakes: number
  cpu: number
  split: string
}

async function load(t: RunningTarget, threads: number): Promise<Share> {
  const pids = processTree(t.process.pid)
  const before = pids.map((p) => cpuSeconds(p) - childrenCpu(p))
  const r = await runHandshakes({
    mode: "full",
    port: t.port,
    proxyPid: t.process.pid,
    fingerprint256: cert.fingerprint256,
    threads,
    concurrency: CONCURRENCY,
    warmupS: WARMUP_S,
    measureS: MEASURE_S,
  })
  if (r.problems.length > 0) console.log(`  ${t.spec.name}: ${r.problems.join("; ")}`)
  // The split covers warm-up and window both: it shows which process worked, not the figure.
  const split = pids.map((p, i) => `${p} ${(cpuSeconds(p) - childrenCpu(p) - before[i]!).toFixed(2)} s`).join(", ")
  return { handshakes: r.window.full, cpu: r.proxyCpu, split }
}

/** childrenCpu is the CPU of pid's descendants (cpuSeconds counts the whole tree). */
function childrenCpu(pid: number): number {
  return processTree(pid)
    .filter((p) => p !== pid)
    .reduce((n, p) => n + cpuSeconds(p), 0)
}

const loadavg = () => readFileSync("/proc/loadavg", "utf8").split(" ")[0]
const figure = (s: Share[]) => {
  const hs = s.reduce((n, x) => n + x.handshakes, 0)
  const cpu = s.reduce((n, x) => n + x.cpu, 0)
  return `${hs} handshakes / ${cpu.toFixed(2)} CPU-s = ${(hs / cpu).toFixed(0)} per CPU-s`
}

try {
  for (let round = 1; round <= rounds; round++) {
    const one = await start("portcullis", `one-${round}`)
    const s1 = await load(one, THREADS)
    await one.close()
    console.log(`round ${round} one process:          ${figure([s1])} (load ${loadavg()}; ${s1.split})`)

    const a = await start("portcullis", `a-${round}`)
    const b = await start("portcullis", `b-${round}`)
    const pair = await Promise.all([load(a, THREADS / 2), load(b, THREADS / 2)])
    await Promise.all([a.close(), b.close()])
    console.log(
      `round ${round} two independent:      ${figure(pair)} (load ${loadavg()}; ${pair.map((s) => s.split).join("; ")})`,
    )

    const w = await start("portcullis-workers2", `workers-${round}`)
    const s2 = await load(w, THREADS)
    await w.close()
    console.log(`round ${round} cluster.workers 2:    ${figure([s2])} (load ${loadavg()}; ${s2.split})`)
  }
} finally {
  await backend.close()
  rmSync(dir, { recursive: true, force: true })
}
