/** Real third-party servers for end-to-end tests: a plain nginx and a plain redis-server on free loopback ports. */
import { type ChildProcess, execFile, spawn } from "node:child_process"
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import net from "node:net"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { Writable } from "node:stream"
import { pino } from "pino"
import { parseConfig } from "../../src/config/load.ts"
import { AccessLog } from "../../src/core/access-log.ts"
import { Runtime } from "../../src/runtime.ts"
import { listenerHost, type RunningPortcullis } from "./portcullis.ts"

/** ExternalServer is a child process listening on 127.0.0.1:port; close() stops it and removes its dir. */
export interface ExternalServer {
  port: number
  dir: string
  /** output is what the process wrote to stderr and stdout so far */
  output: () => string
  close: () => Promise<void>
}

/** canConnect resolves true when 127.0.0.1:port accepts a TCP connection. */
export function canConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ port, host: "127.0.0.1" })
    s.once("connect", () => {
      s.destroy()
      resolve(true)
    })
    s.once("error", () => resolve(false))
  })
}

/** listensOn is true when process pid holds a listening TCP socket on 127.0.0.1:port (read with `ss -ltnp`). */
function listensOn(pid: number, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    execFile("ss", ["-Hltnp", `sport = :${port}`], { timeout: 5000 }, (err, stdout) => {
      resolve(!err && stdout.split("\n").some((l) => l.includes(`127.0.0.1:${port} `) && l.includes(`pid=${pid},`)))
    })
  })
}

/**
 * runOnFreePort starts a server that cannot listen on port 0 (redis-server's --port 0 turns TCP off; nginx refuses
 * port 0) on a candidate port the kernel just gave out, and checks that the process itself holds the port (a
 * connect alone could reach whoever took it first). Another process may bind the candidate between our probe and
 * the server's bind: then the server exits (EADDRINUSE) and the next candidate is tried, up to 5.
 */
async function runOnFreePort(
  name: string,
  command: string,
  argsFor: (port: number) => string[],
  dir: string,
): Promise<ExternalServer> {
  let last = ""
  for (let attempt = 0; attempt < 5; attempt++) {
    const port = await candidatePort()
    const child: ChildProcess = spawn(command, argsFor(port), { stdio: ["ignore", "pipe", "pipe"] })
    let text = ""
    child.stdout?.on("data", (c: Buffer) => {
      text += c.toString()
    })
    child.stderr?.on("data", (c: Buffer) => {
      text += c.toString()
    })
    const exited = new Promise<void>((r) => child.once("exit", () => r()))
    const stop = async () => {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill("SIGTERM")
        const timer = setTimeout(() => child.kill("SIGKILL"), 5000)
        await exited
        clearTimeout(timer)
      }
    }
    const close = async () => {
      await stop()
      rmSync(dir, { recursive: true, force: true })
    }
    const deadline = Date.now() + 10_000
    for (;;) {
      if (child.exitCode !== null || child.signalCode !== null) break
      if (await listensOn(child.pid!, port)) return { port, dir, output: () => text, close }
      if (Date.now() > deadline) {
        await close()
        throw new Error(`${name} did not listen on ${port}: ${text}`)
      }
      await new Promise((r) => setTimeout(r, 25))
    }
    await stop()
    last = text
    if (!/in use/i.test(text)) break
  }
  rmSync(dir, { recursive: true, force: true })
  throw new Error(`${name} exited: ${last}`)
}

/** candidatePort is a port the kernel reports free now; runOnFreePort checks it was really won. */
function candidatePort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const s = net.createServer()
    s.once("error", reject)
    s.listen(0, "127.0.0.1", () => {
      const port = (s.address() as net.AddressInfo).port
      s.close(() => resolvePort(port))
    })
  })
}

/** startRedis runs a plain redis-server (no persistence) on a free loopback port. */
export async function startRedis(): Promise<ExternalServer> {
  const dir = mkdtempSync(join(tmpdir(), "pc-redis-"))
  return runOnFreePort(
    "redis-server",
    "redis-server",
    (port) => ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir],
    dir,
  )
}

/** NginxServer: the access log (format `log_format` given to startNginx) is at accessLog. */
export interface NginxServer extends ExternalServer {
  accessLog: string
  /** logLines reads the access log's complete lines so far. */
  logLines: () => string[]
}

/**
 * startNginx runs nginx in the foreground with everything under a temp dir. `server` is the body of one server
 * block where "LISTEN" stands for "127.0.0.1:PORT"; `logFormat` the access log format.
 */
export async function startNginx(server: string, logFormat = "$remote_addr $request_uri"): Promise<NginxServer> {
  const dir = mkdtempSync(join(tmpdir(), "pc-nginx-"))
  const accessLog = join(dir, "access.log")
  const conf = join(dir, "nginx.conf")
  const writeConf = (port: number) =>
    writeFileSync(
      conf,
      `worker_processes 1;
master_process off;
pid ${dir}/nginx.pid;
error_log stderr warn;
events { worker_connections 128; }
http {
  log_format pc '${logFormat}';
  access_log ${accessLog} pc;
  client_body_temp_path ${dir}/body;
  proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi;
  scgi_temp_path ${dir}/scgi;
  server {
    ${server.replaceAll("LISTEN", `127.0.0.1:${port}`)}
  }
}
`,
    )
  const base = await runOnFreePort(
    "nginx",
    "nginx",
    (port) => {
      writeConf(port)
      return ["-c", conf, "-p", dir, "-g", "daemon off;"]
    },
    dir,
  )
  return {
    ...base,
    accessLog,
    logLines: () => {
      try {
        return readFileSync(accessLog, "utf8")
          .split("\n")
          .filter((l) => l !== "")
      } catch {
        return []
      }
    },
  }
}

/** LoggedPortcullis is a running Portcullis whose log lines (parsed JSON, debug level and up) tests can read. */
export interface LoggedPortcullis extends RunningPortcullis {
  logs: Record<string, unknown>[]
}

/** startLoggedPortcullis is startPortcullis with a debug logger whose lines are kept in `logs`. */
export async function startLoggedPortcullis(
  yaml: string,
  dir = mkdtempSync(join(tmpdir(), "pc-")),
): Promise<LoggedPortcullis> {
  const logs: Record<string, unknown>[] = []
  const keep = (text: string) => {
    for (const line of text.split("\n")) if (line) logs.push(JSON.parse(line) as Record<string, unknown>)
  }
  let partial = ""
  const sink = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      partial += chunk.toString()
      const nl = partial.lastIndexOf("\n")
      if (nl >= 0) {
        keep(partial.slice(0, nl))
        partial = partial.slice(nl + 1)
      }
      callback()
    },
  })
  const log = pino({ level: "debug" }, sink)
  // Access lines (core/access-log.ts) land in the same list, in batches.
  const runtime = new Runtime(log, undefined, { accessLog: new AccessLog({ sink: keep }) })
  await runtime.start(parseConfig(yaml, "test.yaml", dir))
  return {
    runtime,
    logs,
    port: (listener) => {
      const ports = runtime.ports()
      return listener ? ports[listener]! : Object.values(ports)[0]!
    },
    host: (listener) => listenerHost(runtime, listener),
    reload: async (next) => runtime.reload(parseConfig(next, "test.yaml", dir)),
    close: () => runtime.close(200),
  }
}
