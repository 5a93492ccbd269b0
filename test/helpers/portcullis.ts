/** Runs Portcullis for a test: in-process from YAML text, or as a child process like an operator would. */
import { type ChildProcess, spawn } from "node:child_process"
import { mkdtempSync, writeFileSync } from "node:fs"
import net from "node:net"
import { tmpdir } from "node:os"
import { join, resolve } from "node:path"
import { parseConfig } from "../../src/config/load.ts"
import { silentLogger } from "../../src/core/log.ts"
import { Runtime } from "../../src/runtime.ts"

/** freePort asks the kernel for a free loopback port (closed again before use). */
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

export interface RunningPortcullis {
  runtime: Runtime
  port: (listener?: string) => number
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
    reload: async (next) => runtime.reload(parseConfig(next, "test.yaml", dir)),
    close: () => runtime.close(200),
  }
}

export const ROOT = resolve(import.meta.dirname, "../..")
export const MAIN = join(ROOT, "src/main.ts")

export interface ChildPortcullis {
  child: ChildProcess
  output: () => string
  waitFor: (pattern: RegExp, timeoutMs?: number) => Promise<string>
  stop: (signal?: NodeJS.Signals) => Promise<number | null>
}

/** spawnPortcullis runs `node src/main.ts ARGS` in cwd; waitFor matches its combined output. */
export function spawnPortcullis(
  args: string[],
  options: { cwd?: string; env?: NodeJS.ProcessEnv } = {},
): ChildPortcullis {
  const child = spawn(process.execPath, [MAIN, ...args], {
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

/** writeTemp writes a file into dir and returns its path. */
export function writeTemp(dir: string, name: string, content: string): string {
  const path = join(dir, name)
  writeFileSync(path, content)
  return path
}
