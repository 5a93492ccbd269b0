/** Fleet tests: Portcullis instances (in-process runtimes, each with its own store connections) sharing one redis-server. */
import { type ChildProcess, spawn } from "node:child_process"
import { mkdtempSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import tls from "node:tls"
import { FleetStore, type FleetStoreOptions } from "../../src/cluster/shared/fleet-store.ts"
import { parseConfig } from "../../src/config/load.ts"
import { type Logger, silentLogger } from "../../src/core/log.ts"
import { Runtime } from "../../src/runtime.ts"
import { RuntimeState } from "../../src/state/runtime-state.ts"
import { canConnect } from "../helpers/servers.ts"
import { waitUntil } from "../helpers/wait.ts"

export interface Instance {
  runtime: Runtime
  fleet: FleetStore | undefined
  port: (listener?: string) => number
  close: () => Promise<void>
}

/**
 * startInstance runs one instance from YAML; with `redis` (a redis:// URL) it joins that fleet store (`fleetOptions`
 * override its timings).
 */
export async function startInstance(
  yaml: string,
  redis?: string,
  log: Logger = silentLogger(),
  fleetOptions: Pick<FleetStoreOptions, "certificatePollMs"> = {},
): Promise<Instance> {
  const dir = mkdtempSync(join(tmpdir(), "pc-fleet-"))
  const config = parseConfig(yaml, "test.yaml", dir)
  let runtime: Runtime | undefined
  let fleet: FleetStore | undefined
  if (redis) {
    fleet = new FleetStore({
      store: { redis },
      log,
      version: "test",
      heartbeatMs: 200,
      ringPollMs: 500,
      rateWindowMs: 100,
      ...fleetOptions,
      self: () => ({ addresses: {}, status: runtime?.ready ? "serving" : "starting" }),
    })
    await fleet.start()
    runtime = new Runtime(log, new RuntimeState({ ticketKeys: fleet.ring }), { fleet })
  } else runtime = new Runtime(log)
  await runtime.start(config)
  return {
    runtime,
    fleet,
    port: (listener) => {
      const ports = runtime.ports()
      return listener ? ports[listener]! : Object.values(ports)[0]!
    },
    close: async () => {
      await runtime.close(200)
      await fleet?.close()
    },
  }
}

/** currentKey is the ticket key name an instance's contexts seal new tickets with now (they read the ring live). */
export function currentKey(instance: Instance): string {
  return instance.runtime.state.ticketKeys.current().name
}

/** waitSameKey waits until every instance has the same current ticket key (its contexts use it at once). */
export async function waitSameKey(instances: Instance[], timeoutMs = 10_000): Promise<void> {
  await waitUntil(
    () => new Set(instances.map(currentKey)).size === 1,
    "every instance holds the fleet's current ticket key",
    timeoutMs,
  )
}

/**
 * connect makes one TLS connection to 127.0.0.1:port, sends one request with connection: close and reads to the
 * end (a TLS 1.3 ticket arrives after the handshake); returns whether the session was resumed and the last session.
 */
export function connect(
  port: number,
  ca: Buffer,
  version: "TLSv1.2" | "TLSv1.3",
  session?: Buffer,
): Promise<{ reused: boolean; session: Buffer | undefined; status: string }> {
  return new Promise((resolve, reject) => {
    let last: Buffer | undefined
    let reused = false
    const socket = tls.connect({
      host: "127.0.0.1",
      port,
      servername: "localhost",
      ca,
      minVersion: version,
      maxVersion: version,
      ...(session && { session }),
    })
    const timer = setTimeout(() => socket.destroy(new Error("no answer within 10 s")), 10_000)
    socket.on("session", (s: Buffer) => {
      last = s
    })
    socket.once("secureConnect", () => {
      reused = socket.isSessionReused()
      socket.write("GET / HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
    })
    let text = ""
    socket.on("data", (d: Buffer) => {
      text += d.toString()
    })
    socket.once("error", (err) => {
      clearTimeout(timer)
      reject(err)
    })
    socket.once("close", () => {
      clearTimeout(timer)
      resolve({ reused, session: last, status: text.slice(0, 12) })
    })
  })
}

/** RedisProcess is a redis-server on a fixed port that a test can SIGKILL and start again on the same port. */
export interface RedisProcess {
  kill: () => Promise<void>
  /** signal sends SIGSTOP or SIGCONT (a hung server, then one that answers again) */
  signal: (signal: "SIGSTOP" | "SIGCONT") => void
  start: () => Promise<void>
}

/** redisOn starts redis-server on `port` (one the test already won with startRedis, after stopping that one). */
export function redisOn(port: number, dir: string): RedisProcess {
  let child: ChildProcess | undefined
  return {
    start: async () => {
      child = spawn(
        "redis-server",
        ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir],
        { stdio: "ignore" },
      )
      const started = child
      await waitUntilAsync(
        () => canConnect(port),
        `redis-server listening on ${port}`,
        () => started.exitCode !== null,
      )
    },
    signal: (signal) => {
      child?.kill(signal)
    },
    kill: async () => {
      const c = child
      if (!c || c.exitCode !== null || c.signalCode !== null) return
      const exited = new Promise((r) => c.once("exit", r))
      c.kill("SIGKILL")
      await exited
    },
  }
}

async function waitUntilAsync(
  condition: () => Promise<boolean>,
  message: string,
  failed: () => boolean,
  timeoutMs = 10_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!(await condition())) {
    if (failed()) throw new Error(`${message}: the process exited`)
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms: ${message}`)
    await new Promise((r) => setTimeout(r, 20))
  }
}
