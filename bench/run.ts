/**
 * @module run: `npm run bench [-- --quick] [--only W2,W3] [--targets portcullis,haproxy] [--passes N]`: measures
 * Portcullis and the anchors (HAProxy, nginx, hitch) plus a bare Node TLS pipe on the same work in one run, and
 * reports work per proxy CPU-second and its ratio to HAProxy. See docs/benchmarks.md.
 */
import { execFileSync, spawnSync } from "node:child_process"
import { appendFileSync, chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs"
import net from "node:net"
import { cpus, tmpdir } from "node:os"
import { join } from "node:path"
import { parseArgs } from "node:util"
import { type Backend, BULK_SIZE, SMALL_SIZE, startBackend } from "./lib/backend.ts"
import { runH2load } from "./lib/h2load.ts"
import { type LatencyResult, runPacedConnections, runPacedRequests } from "./lib/latency.ts"
import { type BenchCert, makeCert } from "./lib/pki.ts"
import {
  cpuSeconds as cpuSecondsOf,
  ensurePinned,
  failureSummary,
  niceOf,
  openFilesLimit,
  processTree,
  rssBytes,
  signalAll,
} from "./lib/proc.ts"
import {
  type CellRun,
  checkRatios,
  renderChecks,
  renderTables,
  type Summary,
  summarise,
  type WorkloadId,
} from "./lib/report.ts"
import { leastStolen, type Take } from "./lib/steal.ts"
import { LOG_OFF, PROXY_CORE, type RunningTarget, startTarget, TARGETS, type TargetSpec } from "./lib/targets.ts"
import { runHandshakes, runIdle } from "./lib/tls-load.ts"

const benchDir = import.meta.dirname
const ALL_WORKLOADS: WorkloadId[] = ["W1", "W2", "W3", "W3c", "W4", "W5", "W7", "W7c", "W6"]
const QUICK_WORKLOADS: WorkloadId[] = ["W1", "W2", "W3"]
/** Workloads each target runs unless --only says otherwise (portcullis-tcp is the "W2 through the tcp engine" row). */
const TARGET_WORKLOADS: Record<string, WorkloadId[]> = {
  "portcullis-tcp": ["W2", "W4", "W6", "W7"],
  // The metrics-off row is only for the check "metrics on vs off, W2 >= 0.95" (docs/benchmarks.md).
  "portcullis-metrics-off": ["W2"],
  "baseline-tcp": ["W2", "W4", "W6", "W7"],
  // The two-worker rows (both cores): W1-W4, per CPU-second beside their one-process rows.
  "haproxy-nbthread2": ["W1", "W2", "W3", "W4"],
  "nginx-workers2": ["W1", "W2", "W3", "W4"],
  "portcullis-workers2": ["W1", "W2", "W3", "W4"],
  "portcullis-2cores": ["W1", "W2", "W3", "W4"],
}
/** The access-log-off rows run the throughput and latency workloads: a log line costs per request, not per idle byte. */
const LOG_OFF_WORKLOADS: WorkloadId[] = ["W1", "W2", "W3", "W3c", "W4", "W7"]
/**
 * W7 rates: keep-alive requests per second (5 connections x 1,000/s) and new TLS connections per second. h2load's
 * per-client --rps timers fire together, so N clients send bursts of N requests: with 50 x 100/s the backend alone
 * answered at p50 1.5 ms and p99 8-11 ms (its queue, not latency anyone adds); 5 x 1,000/s: p50 147 µs, p99 428 µs.
 */
const W7_CLIENTS = 5
const W7_RPS_PER_CLIENT = 1000
const W7C_RATE = 500
const REQUIRED_TOOLS = ["haproxy", "nginx", "hitch", "h2load", "openssl", "taskset"]

const { values: flags } = parseArgs({
  options: {
    quick: { type: "boolean", default: false },
    only: { type: "string" },
    targets: { type: "string" },
    passes: { type: "string" },
    measure: { type: "string" },
    warmup: { type: "string" },
    "idle-connections": { type: "string" },
    "keep-dir": { type: "boolean", default: false },
    help: { type: "boolean", short: "h", default: false },
  },
  strict: true,
})

if (flags.help) {
  console.log(`usage: npm run bench -- [--quick] [--only W1,W2,...] [--targets haproxy,portcullis,...] [--passes N]
       [--measure SECONDS] [--warmup SECONDS] [--idle-connections N] [--keep-dir]
targets: ${TARGETS.map((t) => t.name).join(", ")}
workloads: W1 full TLS 1.3 handshakes, W2 HTTP/1.1 keep-alive, W3 HTTP/2, W3c HTTP/2 to an h2c backend,
           W4 1 MiB bulk, W5 resumed handshakes, W6 RSS per idle TLS connection`)
  process.exit(0)
}

// Re-run ourselves pinned to core 0, at nice -10, with the soft open-files limit raised to the hard one.
if (process.env["PORTCULLIS_BENCH_PINNED"] !== "1") {
  const r = spawnSync(
    "sh",
    [
      "-c",
      'ulimit -n "$(ulimit -Hn)" 2>/dev/null; exec taskset -c 0 nice -n -10 "$@"',
      "sh",
      process.execPath,
      ...process.execArgv,
      import.meta.filename,
      ...process.argv.slice(2),
    ],
    { stdio: "inherit", env: { ...process.env, PORTCULLIS_BENCH_PINNED: "1" } },
  )
  process.exit(r.status ?? 1)
}

const quick = flags.quick
// Three passes by default: a median of two is their mean, so one pass taken while a neighbour loaded the host moves
// the figure by half its error; of three it is outvoted (docs/benchmarks.md, "Steal time").
const passes = Number(flags.passes ?? (quick ? 1 : 3))
const measureS = Number(flags.measure ?? (quick ? 2 : 8))
const warmupS = Number(flags.warmup ?? (quick ? 1 : 2))
const idleCount = Number(flags["idle-connections"] ?? (quick ? 2000 : 9000))
const workloads: WorkloadId[] = flags.only
  ? flags.only.split(",").map((w) => {
      const id = ALL_WORKLOADS.find((x) => x.toUpperCase() === w.trim().toUpperCase()) ?? (w as WorkloadId)
      if (!ALL_WORKLOADS.includes(id)) throw new Error(`unknown workload ${w}; known: ${ALL_WORKLOADS.join(",")}`)
      return id
    })
  : quick
    ? QUICK_WORKLOADS
    : ALL_WORKLOADS
const targetSpecs: TargetSpec[] = flags.targets
  ? flags.targets.split(",").map((n) => {
      const t = TARGETS.find((x) => x.name === n.trim())
      if (!t) throw new Error(`unknown target ${n}; known: ${TARGETS.map((x) => x.name).join(",")}`)
      return t
    })
  : [...TARGETS]
const ANCHOR = "haproxy"

function runsWorkload(spec: TargetSpec, w: WorkloadId): boolean {
  if (w === "W3" && spec.layer === "L4") return false
  // W3c needs an HTTP/2 upstream; a target without one (nginx, L4) shows "–" in its cell.
  if (w === "W3c" && !spec.h2Upstream) return false
  const own = spec.name.endsWith(LOG_OFF) ? LOG_OFF_WORKLOADS : TARGET_WORKLOADS[spec.name]
  return own ? own.includes(w) || flags.only !== undefined : true
}

// ---- setup: tools, directories, certificate, backend -------------------------------------------------------------

function missingTools(): string[] {
  return REQUIRED_TOOLS.filter((t) => spawnSync("sh", ["-c", `command -v ${t}`], { stdio: "ignore" }).status !== 0)
}
if (missingTools().length > 0) {
  console.log(`missing ${missingTools().join(", ")}: running bench/setup.sh`)
  const r = spawnSync("bash", [join(benchDir, "setup.sh")], { stdio: "inherit" })
  if (r.status !== 0 || missingTools().length > 0) {
    console.error(`bench/setup.sh could not install ${missingTools().join(", ")}`)
    process.exit(1)
  }
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer()
    s.on("error", reject)
    s.listen(0, "127.0.0.1", () => {
      const a = s.address() as net.AddressInfo
      s.close(() => resolve(a.port))
    })
  })
}

const stamp = new Date().toISOString().replace(/[:.]/g, "-")
const resultsDir = join(benchDir, "results")
mkdirSync(resultsDir, { recursive: true })
const resultsFile = join(resultsDir, `${stamp}.jsonl`)
const emit = (o: object) => appendFileSync(resultsFile, JSON.stringify(o) + "\n")
const workDir = mkdtempSync(join(tmpdir(), "portcullis-bench-"))
chmodSync(workDir, 0o755)

const running = new Map<string, RunningTarget>()
let backend: Backend | undefined
/**
 * alone runs one cell with every other target stopped (SIGSTOP on its whole process tree, SIGCONT after): the targets
 * stay up across passes, and their idle timers, health probes and GC threads otherwise wake up on the cores the
 * measured one runs on (docs/benchmarks.md, "Topology", has the runs before and after; the effect is not yet told
 * apart from the machine's drift).
 */
async function alone<T>(name: string, cell: () => Promise<T>): Promise<T> {
  const others = [...running.entries()].filter(([n]) => n !== name).flatMap(([, t]) => processTree(t.process.pid))
  signalAll(others, "SIGSTOP")
  try {
    return await cell()
  } finally {
    signalAll(others, "SIGCONT")
  }
}

/** STEAL_RETAKE: a cell during which the hypervisor stole more than this share of either core is taken again. */
const STEAL_RETAKE = 0.05
/** STEAL_TAKES: at most this many takes of one cell. */
const STEAL_TAKES = 3

/**
 * withSteal takes a cell again while the hypervisor stole more than STEAL_RETAKE of a core during it (lib/steal.ts),
 * up to `takes` takes; the take with the least steal counts, the others go to the results file as "retaken" records.
 * Each cell records when it started and its steal per core. W6 is taken once: RSS per idle connection does not
 * depend on the host's load, and a second take would measure a process that already held the first take's.
 */
async function withSteal(take: () => Promise<CellRun>, takes = STEAL_TAKES): Promise<CellRun> {
  const { best, others } = await leastStolen(
    async () => {
      const startedAt = new Date().toISOString()
      return { run: await take(), startedAt }
    },
    {
      limit: STEAL_RETAKE,
      takes,
      stop: () => interrupted,
    },
  )
  const withInfo = (t: Take<{ run: CellRun; startedAt: string }>): CellRun => ({
    ...t.result.run,
    extra: { ...t.result.run.extra, started_at: t.result.startedAt, take: t.take, steal_pct: t.steal.map(pct) },
  })
  for (const t of others) {
    emit({ ...withInfo(t), type: "retaken" })
    console.log(
      `  ${t.result.run.target} ${t.result.run.workload} pass ${t.result.run.pass} take ${t.take}: steal ${t.steal.map((x) => `${pct(x)}%`).join("/")}, not counted`,
    )
  }
  return withInfo(best)
}

const pct = (x: number) => Math.round(x * 1000) / 10

function stealNote(r: CellRun): string {
  const steal = (r.extra?.["steal_pct"] as number[] | undefined) ?? []
  const take = (r.extra?.["take"] as number | undefined) ?? 1
  return steal.some((x) => x >= 1) || take > 1
    ? ` (steal ${steal.map((x) => `${x}%`).join("/")}${take > 1 ? `, take ${take}` : ""})`
    : ""
}

async function cleanup(): Promise<void> {
  await Promise.allSettled([...running.values()].map((t) => t.close()))
  running.clear()
  await backend?.close()
  backend = undefined
  if (!flags["keep-dir"]) rmSync(workDir, { recursive: true, force: true })
}
let interrupted = false
for (const sig of ["SIGINT", "SIGTERM"] as const) {
  process.on(sig, () => {
    if (interrupted) process.exit(130)
    interrupted = true
    console.error(`\n${sig}: stopping the targets`)
    void cleanup().finally(() => process.exit(130))
  })
}

function versionOf(cmd: string, args: string[]): string {
  try {
    return execFileSync("sh", ["-c", `${cmd} ${args.join(" ")} 2>&1`], { encoding: "utf8" })
      .trim()
      .split("\n")[0]!
  } catch (err) {
    return `unavailable: ${(err as Error).message}`
  }
}

function machine() {
  const cpuModel = cpus()[0]?.model ?? "unknown"
  return {
    nproc: Number(execFileSync("nproc", ["--all"], { encoding: "utf8" }).trim()),
    cpu: cpuModel,
    kernel: readFileSync("/proc/sys/kernel/osrelease", "utf8").trim(),
    os: /PRETTY_NAME="([^"]+)"/.exec(readFileSync("/etc/os-release", "utf8"))?.[1] ?? "unknown",
    versions: {
      haproxy: versionOf("haproxy", ["-v"]).replace(/ - https.*$/, ""),
      nginx: versionOf("nginx", ["-v"]).replace(/^nginx version: /, ""),
      hitch: versionOf("hitch", ["--version"]),
      h2load: versionOf("h2load", ["--version"]),
      node: process.version,
      node_openssl: process.versions.openssl,
      system_openssl: versionOf("openssl", ["version"]),
    },
    bench_process: { nice: niceOf(process.pid), open_files: openFilesLimit() },
  }
}

// ---- one cell -----------------------------------------------------------------------------------------------------

interface TargetState {
  spec: TargetSpec
  port: number
  failure?: string
}

async function ensureRunning(st: TargetState, cert: BenchCert, fresh = false): Promise<RunningTarget> {
  let t = running.get(st.spec.name)
  if (t && fresh) {
    await t.close()
    running.delete(st.spec.name)
    t = undefined
  }
  if (t) {
    const code = await Promise.race([t.process.exited, Promise.resolve("alive" as const)])
    if (code !== "alive") {
      running.delete(st.spec.name)
      throw new Error(`${st.spec.name} exited (${code}) after the previous cell: ${failureSummary(t.process.logFile)}`)
    }
    t.pinNotes.push(...ensurePinned(t.process.pid, st.spec.cores ?? PROXY_CORE))
    return t
  }
  t = await startTarget(st.spec, {
    dir: join(workDir, st.spec.name),
    port: st.port,
    backendPort: backend!.port,
    h2cBackendPort: backend!.h2cPort,
    cert,
  })
  running.set(st.spec.name, t)
  return t
}

function failedCell(pass: number, target: string, w: WorkloadId, reason: string): CellRun {
  return {
    type: "cell",
    pass,
    target,
    workload: w,
    ok: false,
    problems: [reason],
    work: 0,
    unit: "",
    seconds: 0,
    proxy_cpu_s: 0,
    figure: Number.NaN,
    rate_per_s: Number.NaN,
    proxy_cpu_util: 0,
  }
}

/** Baselines: the same paced load straight to the backend, measured once per pass, subtracted from each target's. */
const baselines = new Map<string, LatencyResult>()

async function baseline(pass: number, w: "W7" | "W7c"): Promise<LatencyResult> {
  const key = `${pass}:${w}`
  let b = baselines.get(key)
  if (!b) {
    b =
      w === "W7"
        ? await runPacedRequests({
            url: `http://127.0.0.1:${backend!.port}/small`,
            clients: W7_CLIENTS,
            rpsPerClient: W7_RPS_PER_CLIENT,
            warmupS,
            seconds: measureS,
            logFile: join(workDir, `w7-direct-${pass}.log`),
          })
        : await runPacedConnections({ port: backend!.port, tls: false, rate: W7C_RATE, warmupS, seconds: measureS })
    baselines.set(key, b)
    emit({ type: "baseline", pass, workload: w, ...b })
    console.log(
      `pass ${pass} ${w} backend direct   p50 ${b.pct.p50.toFixed(0)} µs, p99 ${b.pct.p99.toFixed(0)} µs, p99.9 ${b.pct.p999.toFixed(0)} µs${b.problems.length ? ` PROBLEMS: ${b.problems.join("; ")}` : ""}`,
    )
  }
  return b
}

async function measureLatency(
  base: { type: "cell"; pass: number; target: string; workload: WorkloadId },
  t: RunningTarget,
  w: "W7" | "W7c",
): Promise<CellRun> {
  const direct = await baseline(base.pass, w)
  const c0 = cpuSecondsOf(t.process.pid)
  const r =
    w === "W7"
      ? await runPacedRequests({
          url: `https://127.0.0.1:${t.port}/small`,
          clients: W7_CLIENTS,
          rpsPerClient: W7_RPS_PER_CLIENT,
          warmupS,
          seconds: measureS,
          logFile: join(workDir, `w7-${base.target}-${base.pass}.log`),
        })
      : await runPacedConnections({ port: t.port, tls: true, rate: W7C_RATE, warmupS, seconds: measureS })
  const cpu = cpuSecondsOf(t.process.pid) - c0
  const added = {
    p50: r.pct.p50 - direct.pct.p50,
    p99: r.pct.p99 - direct.pct.p99,
    p999: r.pct.p999 - direct.pct.p999,
  }
  const problems = [...r.problems, ...direct.problems.map((p) => `baseline: ${p}`)]
  return {
    ...base,
    ok: problems.length === 0,
    problems,
    work: r.samples,
    unit: w === "W7" ? "requests" : "connections",
    seconds: r.seconds,
    proxy_cpu_s: cpu,
    figure: added.p99,
    rate_per_s: r.rate,
    proxy_cpu_util: cpu / (warmupS + measureS),
    extra: { added_us: added, target_us: r.pct, direct_us: direct.pct },
  }
}

async function measure(pass: number, st: TargetState, w: WorkloadId, cert: BenchCert): Promise<CellRun> {
  if (st.failure) return failedCell(pass, st.spec.name, w, st.failure)
  let t: RunningTarget
  try {
    t = await ensureRunning(st, cert, w === "W6")
  } catch (err) {
    const reason = `did not start: ${(err as Error).message}`
    if (!running.has(st.spec.name) && st.spec.name.startsWith("portcullis")) st.failure = reason
    return failedCell(pass, st.spec.name, w, reason)
  }
  const pid = t.process.pid
  const base = { type: "cell" as const, pass, target: st.spec.name, workload: w }
  if (w === "W7" || w === "W7c") return measureLatency(base, t, w)
  if (w === "W1" || w === "W5") {
    const r = await runHandshakes({
      mode: w === "W1" ? "full" : "resumed",
      port: t.port,
      proxyPid: pid,
      fingerprint256: cert.fingerprint256,
      threads: 3,
      concurrency: 8,
      warmupS,
      measureS,
    })
    const work = w === "W1" ? r.window.full : r.window.resumed
    return {
      ...base,
      ok: r.problems.length === 0,
      problems: r.problems,
      work,
      unit: w === "W1" ? "full handshakes" : "resumed handshakes",
      seconds: r.seconds,
      proxy_cpu_s: r.proxyCpu,
      figure: work / r.proxyCpu,
      rate_per_s: work / r.seconds,
      proxy_cpu_util: r.proxyCpu / r.seconds,
      extra: {
        counters: r.window,
        groups: r.groups,
        tickets_per_full: r.ticketsPerFull,
        tickets_per_resumed: r.ticketsPerResumed,
        client_cpu_s: r.clientCpu,
        client_us_per_handshake: (r.clientCpu / work) * 1e6,
      },
    }
  }
  if (w === "W6") {
    const r = await runIdle({
      port: t.port,
      fingerprint256: cert.fingerprint256,
      count: idleCount,
      threads: 3,
      concurrency: 32,
      settleMs: 2000,
      rss: () => rssBytes(pid),
    })
    const kib = r.bytesPerConnection / 1024
    return {
      ...base,
      ok: r.problems.length === 0,
      problems: r.problems,
      work: r.connections,
      unit: "idle connections",
      seconds: r.openSeconds,
      proxy_cpu_s: 0,
      figure: kib,
      rate_per_s: r.connections / r.openSeconds,
      proxy_cpu_util: 0,
      extra: { rss_before: r.rssBefore, rss_after: r.rssAfter },
    }
  }
  const shape = {
    W2: { path: "/small", body: SMALL_SIZE, h1: true, clients: 50, streams: 1 },
    W3: { path: "/small", body: SMALL_SIZE, h1: false, clients: 10, streams: 10 },
    // W3 again, but the proxy forwards over HTTP/2 (h2c) to the backend: /c/ routes there.
    W3c: { path: "/c/small", body: SMALL_SIZE, h1: false, clients: 10, streams: 10 },
    W4: { path: "/1m", body: BULK_SIZE, h1: true, clients: 8, streams: 1 },
  }[w]
  const opts = {
    port: t.port,
    proxyPid: pid,
    path: shape.path,
    expectedBody: shape.body,
    h1: shape.h1,
    clients: shape.clients,
    streams: shape.streams,
  }
  const warm = await runH2load({ ...opts, seconds: warmupS })
  const accepts0 = await backend!.accepts()
  const r = await runH2load({ ...opts, seconds: measureS })
  const opened = (await backend!.accepts()) - accepts0
  const problems = [
    ...r.problems,
    ...warm.problems.filter((p) => !p.includes("connections")).map((p) => `warm-up: ${p}`),
  ]
  // A pool that churns reconnects to the backend per request: at most the requests in flight may need new ones.
  const inFlight = shape.clients * shape.streams
  if (!(opened <= Math.ceil(inFlight * 1.1) + 8)) {
    problems.push(`${opened} backend connections opened in the window for ${inFlight} requests in flight (churn)`)
  }
  const work = w === "W4" ? r.dataBytes / 1e6 : r.done
  return {
    ...base,
    ok: problems.length === 0,
    problems,
    work,
    unit: w === "W4" ? "MB" : "requests",
    seconds: r.seconds,
    proxy_cpu_s: r.proxyCpu,
    figure: work / r.proxyCpu,
    rate_per_s: work / r.seconds,
    proxy_cpu_util: r.proxyCpu / r.seconds,
    extra: { tls: r.tls, connections: r.connections, requests: r.done, backend_connections_opened: opened },
  }
}

function latencyLine(r: CellRun): string {
  const e = r.extra as { added_us: { p50: number; p99: number; p999: number } }
  const a = e.added_us
  return `added p50 ${a.p50.toFixed(0)} µs, p99 ${a.p99.toFixed(0)} µs, p99.9 ${a.p999.toFixed(0)} µs at ${r.rate_per_s.toFixed(0)}/s`
}

/** handshakeNote: for W1/W5, the key-exchange groups and the tickets the target sent per connection. */
function handshakeNote(r: CellRun): string {
  if (r.workload !== "W1" && r.workload !== "W5") return ""
  const e = r.extra as { groups?: Record<string, number>; tickets_per_full?: number; tickets_per_resumed?: number }
  const groups = Object.entries(e.groups ?? {})
    .map(([g, n]) => `${g} ${n}`)
    .join(", ")
  const tickets = r.workload === "W1" ? e.tickets_per_full : e.tickets_per_resumed
  return `, groups ${groups}, tickets/connection ${tickets?.toFixed(2)}`
}

// ---- the run ------------------------------------------------------------------------------------------------------

async function main(): Promise<void> {
  const info = machine()
  const options = { quick, passes, measure_s: measureS, warmup_s: warmupS, idle_connections: idleCount, workloads }
  emit({ type: "meta", started: new Date().toISOString(), machine: info, options })
  console.log(`portcullis bench: ${info.nproc} CPUs (${info.cpu}), results in ${resultsFile}`)
  console.log(`passes ${passes}, warm-up ${warmupS} s, measure ${measureS} s, workloads ${workloads.join(",")}`)
  if (info.bench_process.nice !== -10) console.log(`note: running at nice ${info.bench_process.nice}, not -10`)

  const cert = makeCert(workDir)
  backend = await startBackend(join(workDir, "backend"), await freePort(), await freePort())
  const states: TargetState[] = []
  for (const spec of targetSpecs) {
    let version: string
    try {
      version = spec.version()
    } catch (err) {
      version = `unavailable: ${(err as Error).message}`
    }
    states.push({ spec, port: await freePort() })
    emit({ type: "target", name: spec.name, layer: spec.layer, description: spec.description, version })
    console.log(`  ${spec.name.padEnd(15)} ${version}`)
  }

  const runs: CellRun[] = []
  const record = (r: CellRun) => {
    runs.push(r)
    emit(r)
    const fig =
      r.workload === "W6"
        ? `${r.figure.toFixed(1)} KiB/conn`
        : r.workload === "W7" || r.workload === "W7c"
          ? latencyLine(r)
          : `${r.figure.toFixed(0)} ${r.unit}/cpu-s, ${r.rate_per_s.toFixed(0)}/s, proxy cpu ${(r.proxy_cpu_util * 100).toFixed(0)}%${handshakeNote(r)}`
    console.log(
      `pass ${r.pass} ${r.workload} ${r.target.padEnd(15)} ${r.ok ? fig : `FAILED: ${r.problems.join("; ")}`}${stealNote(r)}`,
    )
  }
  const throughput = workloads.filter((w) => w !== "W6")
  for (let pass = 1; pass <= passes; pass++) {
    for (const w of throughput) {
      for (const st of states) {
        if (interrupted) return
        if (runsWorkload(st.spec, w))
          record(await alone(st.spec.name, () => withSteal(() => measure(pass, st, w, cert))))
      }
    }
  }
  // W6 once, on freshly started targets, after the throughput passes
  if (workloads.includes("W6")) {
    for (const st of states) {
      if (interrupted) return
      if (runsWorkload(st.spec, "W6"))
        record(await alone(st.spec.name, () => withSteal(() => measure(1, st, "W6", cert), 1)))
    }
  }
  const pinNotes = [...running.values()].flatMap((t) => t.pinNotes.map((n) => `${t.spec.name}: re-pinned ${n}`))
  for (const n of pinNotes) emit({ type: "note", note: n })

  const summaries: Summary[] = summarise(runs, ANCHOR)
  for (const s of summaries) emit(s)
  const labels = Object.fromEntries(states.map((s) => [s.spec.name, s.spec.name]))
  const shown = states.map((s) => s.spec.name)
  const table = renderTables(summaries, shown, workloads, labels)
  console.log(`\n${table}\n`)
  const checks = checkRatios(summaries)
  for (const c of checks) emit(c)
  if (checks.length > 0) console.log(`${renderChecks(checks)}\n`)
  if (pinNotes.length > 0) console.log(`pinning: ${pinNotes.join("; ")}`)
  console.log(`results: ${resultsFile}`)
}

try {
  await main()
} catch (err) {
  console.error(`bench failed: ${(err as Error).stack ?? err}`)
  process.exitCode = 1
} finally {
  await cleanup()
}
