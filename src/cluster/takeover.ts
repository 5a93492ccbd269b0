/**
 * @module takeover: a new binary takes over the listening sockets. The running process starts the program anew
 * (as it is on disk now, with the same arguments) and passes every listening socket as an inherited file
 * descriptor (stdio slots 4 and up, named in PORTCULLIS_LISTEN_FDS); the new process listens on them
 * (`listen({ fd })`, or its workers do), says it is ready over the IPC channel, and only then does the old one
 * stop accepting and drain. The sockets never close, so no connection is refused; the accept queue is shared.
 */
import { spawn } from "node:child_process"
import { PortcullisError } from "../core/errors.ts"
import { LISTEN_FDS_ENV } from "./inherited-fds.ts"

/** The message a successor sends when it serves. */
export interface SuccessorReady {
  type: "takeover-ready"
  pid: number
}

/**
 * spawnSuccessor starts the successor on `fds` (listen key → descriptor) and resolves with its pid once it is
 * ready; rejects (and kills it) when it exits first or takes longer than timeoutMs. The successor's output goes
 * where ours goes.
 */
export function spawnSuccessor(fds: ReadonlyMap<string, number>, timeoutMs = 60_000): Promise<number> {
  const keys = [...fds.keys()]
  const mapping: Record<string, number> = {}
  keys.forEach((key, i) => {
    mapping[key] = 4 + i
  })
  const child = spawn(process.execPath, [...process.execArgv, ...process.argv.slice(1)], {
    stdio: ["ignore", "inherit", "inherit", "ipc", ...keys.map((k) => fds.get(k)!)],
    env: { ...process.env, [LISTEN_FDS_ENV]: JSON.stringify(mapping) },
  })
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => fail(`it was not ready within ${timeoutMs} ms`), timeoutMs)
    const onExit = (code: number | null, signal: string | null) =>
      fail(`it exited (${signal ?? code}) before it was ready`)
    function fail(why: string): void {
      clearTimeout(timer)
      child.off("exit", onExit)
      if (child.exitCode === null) child.kill("SIGKILL")
      reject(new PortcullisError("PC_TAKEOVER_FAILED", `the new process did not take over: ${why}`))
    }
    child.on("error", (err) => fail(err.message))
    child.on("exit", onExit)
    child.on("message", (msg: SuccessorReady) => {
      if (msg?.type !== "takeover-ready") return
      clearTimeout(timer)
      child.off("exit", onExit)
      child.disconnect()
      child.unref()
      resolve(child.pid ?? msg.pid)
    })
  })
}

/** announceReady tells the process that started us (a takeover) that we serve, and lets go of the channel. */
export function announceReady(): void {
  if (!process.send) return
  const msg: SuccessorReady = { type: "takeover-ready", pid: process.pid }
  process.send(msg, () => process.disconnect())
}
