/**
 * @module takeover: a new binary takes over the listening sockets. The running process starts the program anew
 * (as it is on disk now, with the same arguments) and passes every listening socket as an inherited file
 * descriptor (stdio slots 4 and up, named in PORTCULLIS_LISTEN_FDS); the new process listens on them
 * (`listen({ fd })`, or its workers do), says it is ready over the IPC channel, and only then does the old one
 * stop accepting and drain. The sockets never close, so no connection is refused; the accept queue is shared.
 * Without a fleet store the ticket-key ring lives in this process alone: the successor asks for it over the same
 * IPC channel (a socketpair only the two processes hold; never the environment, argv or a file) before it builds
 * its state, so sessions made before the upgrade resume after it and the rotation schedule goes on.
 */
import { spawn } from "node:child_process"
import { PortcullisError } from "../core/errors.ts"
import { LISTEN_FDS_ENV } from "./inherited-fds.ts"
import type { WireTicketKey } from "./ipc-ticket-ring.ts"

/** The message a successor sends when it serves. */
export interface SuccessorReady {
  type: "takeover-ready"
  pid: number
}

/** What the successor asks its predecessor for before it starts, and the answer. */
interface StateRequest {
  type: "takeover-state?"
}
interface StateReply {
  type: "takeover-state"
  /** The predecessor's ring, current first; undefined when it has none to hand over (a fleet store holds it). */
  keys: WireTicketKey[] | undefined
}

/** HandedState is what the predecessor hands its successor. */
export interface HandedState {
  keys: WireTicketKey[] | undefined
}

/**
 * spawnSuccessor starts the successor on `fds` (listen key → descriptor) and resolves with its pid once it is
 * ready; rejects (and kills it) when it exits first or takes longer than timeoutMs. The successor's output goes
 * where ours goes.
 */
export function spawnSuccessor(
  fds: ReadonlyMap<string, number>,
  state: () => HandedState,
  timeoutMs = 60_000,
): Promise<number> {
  const keys = [...fds.keys()]
  const mapping: Record<string, number> = {}
  keys.forEach((key, i) => {
    mapping[key] = 4 + i
  })
  const child = spawn(process.execPath, [...process.execArgv, ...process.argv.slice(1)], {
    stdio: ["ignore", "inherit", "inherit", "ipc", ...keys.map((k) => fds.get(k)!)],
    // Advanced: the ticket keys cross as bytes.
    serialization: "advanced",
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
    child.on("message", (msg: SuccessorReady | StateRequest) => {
      if (msg?.type === "takeover-state?") {
        const reply: StateReply = { type: "takeover-state", ...state() }
        child.send(reply, ignore)
        return
      }
      if (msg?.type !== "takeover-ready") return
      clearTimeout(timer)
      child.off("exit", onExit)
      child.disconnect()
      child.unref()
      resolve(child.pid ?? msg.pid)
    })
  })
}

/**
 * receiveState asks the process that started us (a takeover) for its state; undefined when we were not started by
 * one or it did not answer within timeoutMs (a predecessor from before this message existed).
 */
export function receiveState(timeoutMs = 5_000): Promise<HandedState | undefined> {
  const send = process.send?.bind(process)
  if (!send) return Promise.resolve(undefined)
  return new Promise((resolve) => {
    const done = (state: HandedState | undefined) => {
      clearTimeout(timer)
      process.off("message", onMessage)
      resolve(state)
    }
    const onMessage = (msg: StateReply) => {
      if (msg?.type === "takeover-state") done({ keys: msg.keys })
    }
    const timer = setTimeout(() => done(undefined), timeoutMs)
    process.on("message", onMessage)
    const ask: StateRequest = { type: "takeover-state?" }
    send(ask, undefined, {}, (err: Error | null) => {
      if (err) done(undefined)
    })
  })
}

/** announceReady tells the process that started us (a takeover) that we serve, and lets go of the channel. */
export function announceReady(): void {
  if (!process.send) return
  const msg: SuccessorReady = { type: "takeover-ready", pid: process.pid }
  process.send(msg, () => process.disconnect())
}

function ignore(): void {}
