/** Real third-party servers for end-to-end tests: a plain nginx and a plain redis-server on free loopback ports. */
import { type ChildProcess, spawn } from "node:child_process"
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import net from "node:net"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { Writable } from "node:stream"
import { pino } from "pino"
import { parseConfig } from "../../src/config/load.ts"
import { Runtime } from "../../src/runtime.ts"
import { freePort, type RunningPortcullis } from "./portcullis.ts"

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

async function runUntilListening(
  name: string,
  command: string,
  args: string[],
  port: number,
  dir: string,
): Promise<ExternalServer> {
  const child: ChildProcess = spawn(command, args, { stdio: ["ignore", "pipe", "pipe"] })
  let text = ""
  child.stdout?.on("data", (c: Buffer) => {
    text += c.toString()
  })
  child.stderr?.on("data", (c: Buffer) => {
    text += c.toString()
  })
  const exited = new Promise<void>((r) => child.once("exit", () => r()))
  const close = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill("SIGTERM")
      const timer = setTimeout(() => child.kill("SIGKILL"), 5000)
      await exited
      clearTimeout(timer)
    }
    rmSync(dir, { recursive: true, force: true })
  }
  const deadline = Date.now() + 10_000
  for (;;) {
    if (child.exitCode !== null) {
      await close()
      throw new Error(`${name} exited: ${text}`)
    }
    if (await canConnect(port)) break
    if (Date.now() > deadline) {
      await close()
      throw new Error(`${name} did not listen on ${port}: ${text}`)
    }
    await new Promise((r) => setTimeout(r, 25))
  }
  return { port, dir, output: () => text, close }
}

/** startRedis runs a plain redis-server (no persistence) on a free loopback port. */
export async function startRedis(): Promise<ExternalServer> {
  const dir = mkdtempSync(join(tmpdir(), "pc-redis-"))
  const port = await freePort()
  const args = ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir]
  return runUntilListening("redis-server", "redis-server", args, port, dir)
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
  const port = await freePort()
  const accessLog = join(dir, "access.log")
  const conf = join(dir, "nginx.conf")
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
  const base = await runUntilListening("nginx", "nginx", ["-c", conf, "-p", dir, "-g", "daemon off;"], port, dir)
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
  let partial = ""
  const sink = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      partial += chunk.toString()
      let nl = partial.indexOf("\n")
      while (nl >= 0) {
        const line = partial.slice(0, nl)
        partial = partial.slice(nl + 1)
        if (line) logs.push(JSON.parse(line) as Record<string, unknown>)
        nl = partial.indexOf("\n")
      }
      callback()
    },
  })
  const log = pino({ level: "debug" }, sink)
  const runtime = new Runtime(log)
  await runtime.start(parseConfig(yaml, "test.yaml", dir))
  return {
    runtime,
    logs,
    port: (listener) => {
      const ports = runtime.ports()
      return listener ? ports[listener]! : Object.values(ports)[0]!
    },
    reload: async (next) => runtime.reload(parseConfig(next, "test.yaml", dir)),
    close: () => runtime.close(200),
  }
}
