/** Runs Portcullis for a test: in-process from YAML text, or as a child process like an operator would. */
import { type ChildProcess, spawn } from "node:child_process"
import { mkdtempSync, writeFileSync } from "node:fs"
import net from "node:net"
import { tmpdir } from "node:os"
import { join, resolve } from "node:path"
import { parseConfig } from "../../src/config/load.ts"
import { silentLogger } from "../../src/core/log.ts"
import { Runtime } from "../../src/runtime.ts"

/**
 * freePort asks the kernel for a free loopback port and closes it again before use: a race (another process may bind
 * it first). Do not add uses: listen on port 0 and read the port back (Runtime.ports(), runningPorts for a child),
 * or use refusingPort for an address where nothing listens. The one use left is signals.test.ts, whose admin port
 * must be written into the config file before the child starts; it retries a candidate it lost.
 */
export function freePort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const s = net.createServer()
    s.once("error", reject)
    s.listen(0, "127.0.0.1", () => {
      const a = s.address()
      const port = typeof a === "object" && a ? a.port : 0
      s.close(() => resolvePort(port))
    })
  })
}

/** HeldPort is a loopback port kept for a test until close(). */
export interface HeldPort {
  port: number
  close: () => void
}

/**
 * refusingPort holds a loopback port where a TCP connect is refused (ECONNREFUSED), for a backend that is down.
 * The port is the local end of an open loopback connection: SYNs to it meet no listener, so the kernel answers
 * RST, and while the connection is open no one can bind or listen on it (bind conflicts, EADDRINUSE). Unlike
 * a port from a closed socket, nothing can start listening there during the test.
 */
export async function refusingPort(): Promise<HeldPort> {
  const server = net.createServer((s) => s.on("error", () => {}))
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r))
  const a = server.address()
  const client = net.connect({ host: "127.0.0.1", port: typeof a === "object" && a ? a.port : 0 })
  client.on("error", () => {})
  await new Promise<void>((r, reject) => {
    client.once("connect", r)
    client.once("error", reject)
  })
  return {
    port: client.localPort!,
    close: () => {
      client.destroy()
      server.close()
    },
  }
}

/**
 * loopback(n) is the nth loopback address (1 → 127.0.0.1, 2 → 127.0.0.2): several listeners of one runtime can
 * each bind port 0 on their own address (the runtime keys bound sockets by address, so two "127.0.0.1:0" would be
 * one). Linux routes all of 127.0.0.0/8 to lo.
 */
export function loopback(n: number): string {
  return `127.0.0.${n}`
}

export interface RunningPortcullis {
  runtime: Runtime
  port: (listener?: string) => number
  /** host is the listener's configured address (127.0.0.1 unless the test gave it another, see loopback) */
  host: (listener?: string) => string
  reload: (yaml: string) => Promise<void>
  close: () => Promise<void>
}

/** startPortcullis builds a runtime from YAML text in-process (paths resolve against dir). */
export async function startPortcullis(
  yaml: string,
  dir = mkdtempSync(join(tmpdir(), "pc-")),
): Promise<RunningPortcullis> {
  const runtime = new Runtime(silentLogger())
  await runtime.start(parseConfig(yaml, "test.yaml", dir))
  return {
    runtime,
    port: (listener) => {
      const ports = runtime.ports()
      return listener ? ports[listener]! : Object.values(ports)[0]!
    },
    host: (listener) => listenerHost(runtime, listener),
    reload: async (next) => runtime.reload(parseConfig(next, "test.yaml", dir)),
    close: () => runtime.close(200),
  }
}

/** listenerHost is the host a listener of the current generation binds (the first listener's by default). */
export function listenerHost(runtime: Runtime, listener?: string): string {
  const listeners = runtime.generation?.config.listeners ?? []
  const l = listener ? listeners.find((x) => x.name === listener) : listeners[0]
  if (!l) throw new Error(`no listener ${listener ?? "at all"}`)
  return l.address.host
}

export const ROOT = resolve(import.meta.dirname, "../..")
export const MAIN = join(ROOT, "src/main.ts")

export interface ChildPortcullis {
  child: ChildProcess
  output: () => string
  waitFor: (pattern: RegExp, timeoutMs?: number) => Promise<string>
  stop: (signal?: NodeJS.Signals) => Promise<number | null>
}

/** spawnPortcullis runs `node [NODEARGS] src/main.ts ARGS` in cwd; waitFor matches its combined output. */
export function spawnPortcullis(
  args: string[],
  options: { cwd?: string; env?: NodeJS.ProcessEnv; nodeArgs?: string[] } = {},
): ChildPortcullis {
  const child = spawn(process.execPath, [...(options.nodeArgs ?? []), MAIN, ...args], {
    cwd: options.cwd ?? ROOT,
    env: { ...process.env, ...options.env },
    stdio: ["ignore", "pipe", "pipe"],
  })
  let text = ""
  let consumed = 0 // successive waitFor calls each match output after the previous match
  const waiters = new Set<() => void>()
  const onData = (d: Buffer) => {
    text += d.toString()
    for (const w of waiters) w()
  }
  child.stdout!.on("data", onData)
  child.stderr!.on("data", onData)
  const exited = new Promise<number | null>((r) => child.on("exit", (code) => r(code)))
  return {
    child,
    output: () => text,
    waitFor: (pattern, timeoutMs = 15_000) =>
      new Promise((resolveWait, reject) => {
        const check = () => {
          const m = pattern.exec(text.slice(consumed))
          if (m) {
            consumed += m.index + m[0].length
            waiters.delete(check)
            clearTimeout(timer)
            resolveWait(m[0])
          }
        }
        const timer = setTimeout(() => {
          waiters.delete(check)
          reject(new Error(`timed out waiting for ${pattern} in output:\n${text}`))
        }, timeoutMs)
        waiters.add(check)
        child.once("exit", () => {
          if (waiters.has(check)) {
            waiters.delete(check)
            clearTimeout(timer)
            reject(new Error(`portcullis exited while waiting for ${pattern}; output:\n${text}`))
          }
        })
        check()
      }),
    stop: async (signal = "SIGTERM") => {
      if (child.exitCode === null) child.kill(signal)
      return exited
    },
  }
}

/** RunningPorts are the ports a child reported in its "portcullis is running" line. */
export interface RunningPorts {
  /** listener name to bound port */
  ports: Record<string, number>
  /** the admin API's port, if it has one */
  admin?: number
}

/** runningPorts waits for the child's "portcullis is running" log line and reads the bound ports from it. */
export async function runningPorts(pc: ChildPortcullis, timeoutMs?: number): Promise<RunningPorts> {
  let line: string
  try {
    line = await pc.waitFor(/^.*"portcullis is running".*$/m, timeoutMs)
  } catch (err) {
    // A child that did not start in time is killed: callers that get no ports have no handle to stop it, and its
    // open pipes would keep the test file's process (and a node --test slot) alive for good.
    pc.child.kill("SIGKILL")
    throw err
  }
  const entry = JSON.parse(line) as { ports: Record<string, number>; admin?: string }
  const admin = entry.admin ? Number(entry.admin.slice(entry.admin.lastIndexOf(":") + 1)) : undefined
  return admin === undefined ? { ports: entry.ports } : { ports: entry.ports, admin }
}

/** writeTemp writes a file into dir and returns its path. */
export function writeTemp(dir: string, name: string, content: string): string {
  const path = join(dir, name)
  writeFileSync(path, content)
  return path
}
