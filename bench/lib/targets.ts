/** @module targets: the proxies under test (anchors, a bare Node TLS pipe, Portcullis), each one worker on core 1. */
import { execFileSync } from "node:child_process"
import { mkdirSync, readFileSync, writeFileSync } from "node:fs"
import { join } from "node:path"
import type { BenchCert } from "./pki.ts"
import { probeGet, waitForPort } from "./probe.ts"
import { ensurePinned, type Spawned, spawnLogged, stopProcess } from "./proc.ts"

/** PROXY_CORE is the core every target is pinned to; the load generator and backend use core 0. */
export const PROXY_CORE = 1

/**
 * BOTH_CORES is where the two-worker rows run (HAProxy nbthread 2, nginx worker_processes 2, Portcullis
 * cluster.workers 2): both cores, shared with the load tool and backend, so their figures are compared per proxy
 * CPU-second (summed over the proxy's processes), not per second.
 */
export const BOTH_CORES = "0-1"

/** StartContext is what a target needs to start: its own dir and port, the shared certificate and backend. */
export interface StartContext {
  readonly dir: string
  readonly port: number
  readonly backendPort: number
  /** h2cBackendPort: the backend's h2c port; an L7 target with an HTTP/2 upstream sends /c/ there (W3c). */
  readonly h2cBackendPort: number
  readonly cert: BenchCert
}

/** TargetSpec describes one proxy under test. */
export interface TargetSpec {
  readonly name: string
  /** layer says whether the target speaks HTTP (L7: runs W3) or forwards bytes (L4). */
  readonly layer: "L7" | "L4"
  /** h2Upstream: the target can speak HTTP/2 to a backend (runs W3c); nginx cannot (its proxy module is HTTP/1.x). */
  readonly h2Upstream?: boolean
  readonly description: string
  /** version returns a one-line version string, or throws when the program is missing. */
  version(): string
  /** launch starts the process; the harness then waits for the port, pins and probes it. */
  launch(ctx: StartContext): Spawned
  /** cores the target is pinned to (default PROXY_CORE); BOTH_CORES for the two-worker rows. */
  readonly cores?: string
}

/** RunningTarget is a started, pinned and probed target. */
export interface RunningTarget {
  readonly spec: TargetSpec
  readonly port: number
  readonly process: Spawned
  readonly pinNotes: string[]
  close(): Promise<void>
}

const benchDir = join(import.meta.dirname, "..")
const repoDir = join(benchDir, "..")

const firstLine = (cmd: string, args: string[]) =>
  execFileSync(cmd, args, { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] })
    .trim()
    .split("\n")[0]!
const nginxVersion = () => {
  const r = execFileSync("sh", ["-c", "nginx -v 2>&1"], { encoding: "utf8" }).trim()
  return r.replace(/^nginx version: /, "")
}

/** LOG_OFF names a target's second row: the same proxy with its access log off (the row a tuned setup gets). */
export const LOG_OFF = "-log-off"
/** METRICS_OFF names the Portcullis row with `metrics: { enabled: false }` (what the metrics cost, W2). */
export const METRICS_OFF = "-metrics-off"

const haproxyTarget = (log: boolean, threads = 1): TargetSpec => ({
  name: threads > 1 ? `haproxy-nbthread${threads}` : log ? "haproxy" : `haproxy${LOG_OFF}`,
  ...(threads > 1 && { cores: BOTH_CORES }),
  layer: "L7",
  h2Upstream: true,
  description:
    threads > 1
      ? `HAProxy as the anchor but nbthread ${threads}, on both cores (compare per CPU-second)`
      : log
        ? "HAProxy, nbthread 1, http-reuse always, option httplog to stdout captured in a file (the anchor: every ratio is to it)"
        : "HAProxy as above, no log",
  version: () => firstLine("haproxy", ["-v"]).replace(/ - https.*$/, ""),
  launch(ctx) {
    const conf = join(ctx.dir, "haproxy.cfg")
    writeFileSync(
      conf,
      `global
  nbthread ${threads}
  maxconn 9500
  ssl-default-bind-options ssl-min-ver TLSv1.2 ssl-max-ver TLSv1.3
${log ? "  log stdout format raw local0 info\n" : ""}defaults
${log ? "  log global\n  option httplog\n" : ""}  mode http
  option http-keep-alive
  http-reuse always
  timeout connect 5s
  timeout client 600s
  timeout server 600s
  timeout http-keep-alive 600s
  timeout http-request 60s
frontend fe
  bind 127.0.0.1:${ctx.port} ssl crt ${ctx.cert.combined} alpn h2,http/1.1
  maxconn 9500
  use_backend be_h2c if { path_beg /c/ }
  default_backend be
backend be
  server s1 127.0.0.1:${ctx.backendPort} maxconn 9500
backend be_h2c
  server s1 127.0.0.1:${ctx.h2cBackendPort} proto h2 maxconn 9500
`,
    )
    return spawnLogged("haproxy", ["-f", conf, "-db"], join(ctx.dir, "haproxy.log"), {
      core: threads > 1 ? BOTH_CORES : PROXY_CORE,
    })
  },
})

const nginxTarget = (log: boolean, workers = 1): TargetSpec => ({
  name: workers > 1 ? `nginx-workers${workers}` : log ? "nginx" : `nginx${LOG_OFF}`,
  ...(workers > 1 && { cores: BOTH_CORES }),
  layer: "L7",
  description:
    workers > 1
      ? `nginx as above but worker_processes ${workers}, on both cores (compare per CPU-second)`
      : log
        ? "nginx, worker_processes 1, upstream keepalive, keepalive_requests raised, access_log (combined) to a file"
        : "nginx as above, access_log off",
  version: nginxVersion,
  launch(ctx) {
    mkdirSync(join(ctx.dir, "tmp"), { recursive: true })
    const conf = join(ctx.dir, "nginx.conf")
    writeFileSync(
      conf,
      `worker_processes ${workers};
worker_rlimit_nofile 20000;
error_log stderr warn;
pid ${ctx.dir}/nginx.pid;
events { worker_connections 20000; }
http {
  access_log ${log ? `${ctx.dir}/access.log` : "off"};
  client_body_temp_path ${ctx.dir}/tmp/body;
  proxy_temp_path ${ctx.dir}/tmp/proxy;
  fastcgi_temp_path ${ctx.dir}/tmp/fastcgi;
  uwsgi_temp_path ${ctx.dir}/tmp/uwsgi;
  scgi_temp_path ${ctx.dir}/tmp/scgi;
  keepalive_requests 100000000;
  keepalive_timeout 600s;
  upstream backend {
    server 127.0.0.1:${ctx.backendPort};
    keepalive 256;
    keepalive_requests 100000000;
    keepalive_timeout 600s;
  }
  server {
    listen 127.0.0.1:${ctx.port} ssl http2 backlog=4096;
    ssl_certificate ${ctx.cert.cert};
    ssl_certificate_key ${ctx.cert.key};
    ssl_protocols TLSv1.2 TLSv1.3;
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_max_temp_file_size 0;
    }
  }
}
`,
    )
    return spawnLogged("nginx", ["-c", conf, "-p", ctx.dir, "-g", "daemon off;"], join(ctx.dir, "nginx.log"), {
      core: workers > 1 ? BOTH_CORES : PROXY_CORE,
    })
  },
})

const hitch: TargetSpec = {
  name: "hitch",
  layer: "L4",
  description: "hitch (L4), workers = 1",
  version: () => firstLine("hitch", ["--version"]),
  launch(ctx) {
    const conf = join(ctx.dir, "hitch.conf")
    writeFileSync(
      conf,
      `frontend = "[127.0.0.1]:${ctx.port}"
backend = "[127.0.0.1]:${ctx.backendPort}"
pem-file = "${ctx.cert.combined}"
workers = 1
backlog = 4096
daemon = off
# hitch refuses to run its workers as root
user = "nobody"
group = "nogroup"
tls-protos = TLSv1.2 TLSv1.3
alpn-protos = "http/1.1"
`,
    )
    return spawnLogged("hitch", ["--config", conf], join(ctx.dir, "hitch.log"), { core: PROXY_CORE })
  },
}

const tlsPipe: TargetSpec = {
  name: "node-tls-pipe",
  layer: "L4",
  description: "reference: a bare Node tls server piping each connection to its own backend connection",
  version: () => `node ${process.version} (OpenSSL ${process.versions.openssl})`,
  launch(ctx) {
    return spawnLogged(
      process.execPath,
      [
        join(benchDir, "targets", "tls-pipe.ts"),
        String(ctx.port),
        String(ctx.backendPort),
        ctx.cert.cert,
        ctx.cert.key,
      ],
      join(ctx.dir, "tls-pipe.log"),
      { core: PROXY_CORE },
    )
  },
}

/**
 * portcullisConfig is what a user writes from README's minimal example: a listener, a route, a backend. Nothing is
 * tuned (keep-alive cap, timeouts and limits are the defaults); the access log is on, as by default, and goes to
 * stdout, which the bench captures in a file as a service manager would. The log-off row differs only in
 * `access_log: { enabled: false }`, the metrics-off row only in `metrics: { enabled: false }`.
 */
function portcullisConfig(
  ctx: StartContext,
  engine: "http" | "tcp",
  log: boolean,
  h2c: boolean,
  metrics = true,
  workers = 1,
): string {
  const route =
    engine === "http"
      ? h2c
        ? "    routes: [{ path_prefix: /c/, upstream: h2c }, { upstream: backend }]"
        : "    routes: [{ upstream: backend }]"
      : "    upstream: backend"
  return `listeners:
  - name: bench
    address: 127.0.0.1:${ctx.port}
    engine: ${engine}
    tls:
      certificates: [{ cert: ${ctx.cert.cert}, key: ${ctx.cert.key} }]
${route}
upstreams:
  backend:
    backends: ["127.0.0.1:${ctx.backendPort}"]
${h2c ? `  h2c:\n    protocol: h2c\n    backends: ["127.0.0.1:${ctx.h2cBackendPort}"]\n` : ""}${log ? "" : "access_log: { enabled: false }\n"}${metrics ? "" : "metrics: { enabled: false }\n"}${workers > 1 ? `cluster: { workers: ${workers} }\n` : ""}data_dir: ${join(ctx.dir, "data")}
`
}

/**
 * portcullisTarget runs Portcullis from `root` (this checkout; PORTCULLIS_BENCH_BASELINE names another checkout, e.g.
 * the commit before a change, run in the same pass as `baseline` rows so before and after share one machine state).
 */
function portcullisTarget(
  engine: "http" | "tcp",
  log = true,
  root = repoDir,
  prefix = "portcullis",
  metrics = true,
  workers = 1,
  bothCores = false,
): TargetSpec {
  const base = `${engine === "http" ? prefix : `${prefix}-tcp`}${metrics ? "" : METRICS_OFF}${workers > 1 ? `-workers${workers}` : ""}${bothCores ? "-2cores" : ""}`
  const spread = workers > 1 || bothCores
  const mainTs = join(root, "src", "main.ts")
  // W3c needs `protocol: h2c` upstreams; a baseline checkout from before them gets neither the route nor the cell.
  const h2c = engine === "http" && supportsH2c(root)
  const name = log ? base : `${base}${LOG_OFF}`
  return {
    name,
    layer: engine === "http" ? "L7" : "L4",
    h2Upstream: h2c,
    ...(spread && { cores: BOTH_CORES }),
    description: `Portcullis${root === repoDir ? "" : ` at ${root}`}, engine ${engine}${engine === "tcp" ? " (L4)" : ""}, ${workers > 1 ? `cluster.workers ${workers} (a primary and ${workers} workers) on both cores (compare per CPU-second)` : bothCores ? "one process on both cores (the control for the two-worker row: the same cores, shared with the load tool, one process)" : "one process"}, ${log ? "defaults (access log on, stdout to a file)" : "defaults but access_log off"}${metrics ? "" : ", metrics: { enabled: false }"}`,
    version: () => {
      const pkg = execFileSync(
        process.execPath,
        ["-p", `require(${JSON.stringify(join(root, "package.json"))}).version`],
        {
          encoding: "utf8",
        },
      ).trim()
      const commit = execFileSync("git", ["-C", root, "rev-parse", "--short", "HEAD"], { encoding: "utf8" }).trim()
      return `portcullis ${pkg} (HEAD ${commit}${dirty(root) ? ", uncommitted changes" : ""}) on node ${process.version}`
    },
    launch(ctx) {
      const conf = join(ctx.dir, `portcullis-${engine}.yaml`)
      writeFileSync(conf, portcullisConfig(ctx, engine, log, h2c, metrics, workers))
      // PORTCULLIS_BENCH_CPU_PROF=DIR: each Portcullis process writes a V8 CPU profile there when it stops (SIGTERM
      // after its last cell), warm-ups and every workload it ran included.
      const profDir = process.env["PORTCULLIS_BENCH_CPU_PROF"]
      const prof = profDir ? ["--cpu-prof", `--cpu-prof-dir=${join(profDir, name)}`] : []
      // PORTCULLIS_BENCH_NODE_FLAGS="--trace-gc-nvp ...": extra node flags for every Portcullis process (diagnosis
      // only; their output lands in the target's log file, between its access log lines).
      const extra = (process.env["PORTCULLIS_BENCH_NODE_FLAGS"] ?? "").split(" ").filter(Boolean)
      return spawnLogged(
        process.execPath,
        [...prof, ...extra, mainTs, "--config", conf],
        join(ctx.dir, `portcullis-${engine}.log`),
        {
          core: spread ? BOTH_CORES : PROXY_CORE,
          cwd: ctx.dir,
        },
      )
    },
  }
}

function supportsH2c(root: string): boolean {
  try {
    return readFileSync(join(root, "src", "config", "schema.ts"), "utf8").includes('"h2c"')
  } catch {
    return false
  }
}

function dirty(root: string): boolean {
  try {
    return execFileSync("git", ["-C", root, "status", "--porcelain", "--", "src"], { encoding: "utf8" }).trim() !== ""
  } catch {
    return false
  }
}

/** TARGETS lists every known target in table order; HAProxy first (the anchor). */
export const TARGETS: readonly TargetSpec[] = [
  haproxyTarget(true),
  haproxyTarget(false),
  nginxTarget(true),
  nginxTarget(false),
  hitch,
  tlsPipe,
  portcullisTarget("http"),
  portcullisTarget("http", false),
  portcullisTarget("http", true, repoDir, "portcullis", false),
  portcullisTarget("tcp"),
  // Two workers each, on both cores (issue 12): the figures per CPU-second set beside the one-process rows.
  haproxyTarget(true, 2),
  nginxTarget(true, 2),
  portcullisTarget("http", true, repoDir, "portcullis", true, 2),
  // One process on the two-worker rows' cores: what sharing both cores with the load tool costs, without workers.
  portcullisTarget("http", true, repoDir, "portcullis", true, 1, true),
  ...(process.env["PORTCULLIS_BENCH_BASELINE"]
    ? [
        portcullisTarget("http", true, process.env["PORTCULLIS_BENCH_BASELINE"], "baseline"),
        portcullisTarget("http", false, process.env["PORTCULLIS_BENCH_BASELINE"], "baseline"),
        portcullisTarget("tcp", true, process.env["PORTCULLIS_BENCH_BASELINE"], "baseline"),
      ]
    : []),
]

/**
 * startTarget launches a target, waits for its port, checks every thread is pinned to the proxy core (re-pinning
 * programs that move their workers) and probes one GET /small through it.
 */
export async function startTarget(spec: TargetSpec, ctx: StartContext): Promise<RunningTarget> {
  mkdirSync(ctx.dir, { recursive: true })
  const proc = spec.launch(ctx)
  try {
    await waitForPort(ctx.port, 20_000, proc)
    const probe = await probeGet(ctx.port, "/small")
    if (probe.status !== 200 || probe.bodyLength !== 100) {
      throw new Error(`probe GET /small answered status ${probe.status} with ${probe.bodyLength} body bytes`)
    }
    if (probe.fingerprint256 !== ctx.cert.fingerprint256) throw new Error("probe saw a different certificate")
    // hitch starts its worker after binding: check pinning once the probe has been served
    const pinNotes = ensurePinned(proc.pid, spec.cores ?? PROXY_CORE)
    return { spec, port: ctx.port, process: proc, pinNotes, close: () => stopProcess(proc) }
  } catch (err) {
    await stopProcess(proc)
    throw err
  }
}
