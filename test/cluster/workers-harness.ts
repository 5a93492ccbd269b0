/** Worker tests: a Portcullis primary with cluster.workers run as a child process, read through its admin API. */
import { mkdtempSync, readFileSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { startEchoBackend } from "../helpers/backends.ts"
import { request } from "../helpers/clients.ts"
import { createPki, type Pki } from "../helpers/pki.ts"
import { type ChildPortcullis, runningPorts, spawnPortcullis, writeTemp } from "../helpers/portcullis.ts"
import { waitUntilAsync } from "./workers-wait.ts"

export interface WorkerStatus {
  worker: number
  pid: number | null
  ready: boolean
  restarts: number
  connections: number
  accepted: number
}

export interface ClusterStatus {
  generation: number
  workers: WorkerStatus[]
  listeners: { name: string; accepted: number; handshakes: number }[]
  upstreams: { name: string; backends: { id: string; state: string }[] }[]
}

export interface RunningCluster {
  pc: ChildPortcullis
  port: number
  admin: number
  file: string
  ca: Buffer
  status: () => Promise<ClusterStatus>
  post: (path: string) => Promise<{ status: number; body: Record<string, unknown> }>
  get: (path: string) => Promise<Response>
  /** send makes one HTTPS request on a new connection; with `retries`, a connection error is tried again. */
  send: (path?: string, retries?: number) => Promise<string>
}

/** clusterYaml is a config with one http listener on port 0 to `upstreams` (name → port), admin on port 0. */
export function clusterYaml(options: {
  certPath: string
  keyPath: string
  upstream: string
  upstreams: Record<string, number>
  workers: number | "auto"
  health?: string
  grace?: string
}): string {
  const ups = Object.entries(options.upstreams)
    .map(
      ([name, port]) =>
        `  ${name}: { backends: ["127.0.0.1:${port}"]${options.health ? `, health: ${options.health}` : ""} }`,
    )
    .join("\n")
  return `
listeners:
  - name: web
    address: "127.0.0.1:0"
    tls: { certificates: [{ cert: ${options.certPath}, key: ${options.keyPath} }] }
    upstream: ${options.upstream}
upstreams:
${ups}
admin: { address: "127.0.0.1:0" }
access_log: { enabled: false }
shutdown_grace: ${options.grace ?? "2s"}
cluster: { workers: ${options.workers} }
`
}

/** startCluster writes the config and runs it until "portcullis is running". */
export async function startCluster(dir: string, yaml: string, pki: Pki): Promise<RunningCluster> {
  const file = writeTemp(dir, "portcullis.yaml", yaml)
  const pc = spawnPortcullis(["--config", file], { env: { PORTCULLIS_LOG_LEVEL: "info" } })
  const { ports, admin } = await runningPorts(pc, 60_000)
  const ca = readFileSync(pki.ca.certPath)
  const base = `http://127.0.0.1:${admin}`
  const cluster: RunningCluster = {
    pc,
    port: ports["web"]!,
    admin: admin!,
    file,
    ca,
    get: (path) => fetch(`${base}${path}`),
    status: async () => (await (await fetch(`${base}/status`)).json()) as ClusterStatus,
    post: async (path) => {
      const res = await fetch(`${base}${path}`, { method: "POST" })
      return { status: res.status, body: (await res.json()) as Record<string, unknown> }
    },
    send: async (path = "/", retries = 0) => {
      for (let attempt = 0; ; attempt++) {
        try {
          const reply = await request({ port: cluster.port, path, ca, headers: { connection: "close" } })
          return `${reply.status} ${reply.text}`
        } catch (err) {
          if (attempt >= retries) throw err
        }
      }
    },
  }
  return cluster
}

/** waitWorkersReady waits until every worker is ready and (optionally) `check` holds for the status. */
export async function waitWorkers(
  cluster: RunningCluster,
  check: (s: ClusterStatus) => boolean,
  message: string,
  timeoutMs = 20_000,
): Promise<ClusterStatus> {
  let last: ClusterStatus | undefined
  await waitUntilAsync(
    async () => {
      last = await cluster.status()
      return check(last)
    },
    message,
    timeoutMs,
  )
  return last!
}

/** EchoCluster: a cluster in front of one echo backend, with its PKI and folder; close() stops and removes it all. */
export interface EchoCluster {
  cluster: RunningCluster
  close(): Promise<void>
}

/**
 * startEchoCluster starts `workers` workers (waiting until all are ready when there are more than one) for
 * `localhost` in front of an echo backend, with shutdown_grace graceMs: the set-up the restart and takeover tests
 * share.
 */
export async function startEchoCluster(prefix: string, workers: number, graceMs: number): Promise<EchoCluster> {
  const dir = mkdtempSync(join(tmpdir(), prefix))
  const pki = await createPki()
  const echo = await startEchoBackend("echo")
  let cluster: RunningCluster | undefined
  const close = async () => {
    await cluster?.pc.stop("SIGKILL")
    await echo.close()
    await pki.close()
    rmSync(dir, { recursive: true, force: true })
  }
  try {
    const site = await pki.issue({ names: ["localhost"] })
    cluster = await startCluster(
      dir,
      clusterYaml({ ...site, upstream: "echo", upstreams: { echo: echo.port }, workers, grace: `${graceMs}ms` }),
      pki,
    )
    if (workers > 1) await waitWorkers(cluster, (s) => s.workers.every((w) => w.ready), "every worker ready")
  } catch (err) {
    await close()
    throw err
  }
  return { cluster, close }
}
