/**
 * @module worker-process: the primary's handle on one worker: the forked child, its IPC requests and answers, and
 * the bound sockets it asks for.
 */
import { type ChildProcess, fork } from "node:child_process"
import type { HostPort } from "../config/schema.ts"
import { errorMessage } from "../core/errors.ts"
import type { FromWorker, QueryKind, ToWorker } from "./messages.ts"
import type { RatesMessage } from "./worker-rates.ts"

/** QUERY_DEADLINE_MS: how long an admin answer waits for a worker before it leaves that worker out (and says so). */
export const QUERY_DEADLINE_MS = 5_000

/** WorkerProcessOptions: which slot, the script to fork, and where its listen requests go. */
export interface WorkerProcessOptions {
  index: number
  /** The program to run with the `worker` command (process.argv[1]: src/main.ts or bin/portcullis.js). */
  script: string
  /** handle returns the bound server handle for a listen key (the primary binds it the first time). */
  handle: (key: string, address: HostPort) => object
  onRotate: () => void
  /** onRates takes the worker's per-client counts (cluster/primary-rates.ts). */
  onRates: (worker: WorkerProcess, msg: RatesMessage) => void
  /** on-demand TLS: resolves true when the name got a certificate (pushed to every worker before it resolves) */
  onDemand: (name: string) => Promise<boolean>
}

/** WorkerProcess: `ready` resolves once the worker serves; `exited` when the process is gone. */
export class WorkerProcess {
  readonly index: number
  readonly child: ChildProcess
  readonly startedAt = Date.now()
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>
  ready = false
  /** When it first served (ms since epoch); undefined before. */
  readyAt: number | undefined
  /** The primary asked it to stop (a rolling restart, shutdown): its exit is no crash. */
  retired = false
  readonly #waiters = new Map<string, (msg: FromWorker) => void>()
  #nextId = 1

  constructor(options: WorkerProcessOptions) {
    this.index = options.index
    this.child = fork(options.script, ["worker"], {
      serialization: "advanced",
      stdio: ["ignore", "inherit", "inherit", "ipc"],
      env: { ...process.env, PORTCULLIS_WORKER_INDEX: String(options.index) },
    })
    this.exited = new Promise((resolve) => this.child.once("exit", (code, signal) => resolve({ code, signal })))
    this.child.on("error", () => {})
    this.child.on("message", (msg: FromWorker) => {
      if (msg.type === "listen") {
        try {
          const handle = options.handle(msg.key, msg.address)
          this.send({ type: "handle", id: msg.id, key: msg.key }, handle)
        } catch (err) {
          this.send({ type: "handle", id: msg.id, key: msg.key, error: errorMessage(err) })
        }
        return
      }
      if (msg.type === "rotate") {
        options.onRotate()
        return
      }
      if (msg.type === "rates") {
        options.onRates(this, msg)
        return
      }
      if (msg.type === "acme-on-demand") {
        const id = msg.id
        options.onDemand(msg.name).then(
          (ok) => this.send({ type: "acme-on-demand", id, ok }),
          () => this.send({ type: "acme-on-demand", id, ok: false }),
        )
        return
      }
      const key = "id" in msg ? `${msg.type}:${msg.id}` : msg.type
      const waiter = this.#waiters.get(key) ?? (msg.type === "failed" ? this.#waiters.get("ready") : undefined)
      waiter?.(msg)
    })
  }

  get pid(): number | undefined {
    return this.child.pid
  }

  get alive(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null
  }

  send(msg: ToWorker, handle?: object): void {
    if (!this.child.connected) return
    // keepOpen: the primary keeps the handle (it holds every listening socket), so Node must not close its copy.
    if (handle) this.child.send(msg, handle as never, { keepOpen: true })
    else this.child.send(msg)
  }

  /** next returns an id for a request. */
  nextId(): number {
    return this.#nextId++
  }

  /**
   * wait resolves with the first message of one of the types (for an id), or rejects when the worker exits first
   * or after timeoutMs.
   */
  wait(types: string[], id: number | undefined, timeoutMs: number): Promise<FromWorker> {
    const keys = types.map((t) => (id === undefined ? t : `${t}:${id}`))
    return new Promise((resolve, reject) => {
      const done = (err: Error | undefined, msg?: FromWorker) => {
        clearTimeout(timer)
        for (const k of keys) this.#waiters.delete(k)
        if (err) reject(err)
        else resolve(msg!)
      }
      const timer = setTimeout(
        () => done(new Error(`worker ${this.index} did not answer within ${timeoutMs} ms`)),
        timeoutMs,
      )
      for (const k of keys) this.#waiters.set(k, (msg) => done(undefined, msg))
      void this.exited.then(({ code, signal }) => done(new Error(`worker ${this.index} exited (${signal ?? code})`)))
    })
  }

  /**
   * query asks the worker for one admin answer (messages.ts QueryKind) and rejects when it has not answered within
   * timeoutMs (a late reply finds no waiter and is dropped).
   */
  query(what: QueryKind, timeoutMs = QUERY_DEADLINE_MS): Promise<unknown> {
    return this.request({ type: "query", id: this.nextId(), what }, timeoutMs)
  }

  /** request sends a message that carries an id and resolves with the worker's reply to it (deadline as query). */
  async request(msg: ToWorker & { id: number }, timeoutMs = QUERY_DEADLINE_MS): Promise<unknown> {
    const reply = this.wait(["reply"], msg.id, timeoutMs)
    this.send(msg)
    const answer = await reply
    return answer.type === "reply" ? answer.value : undefined
  }
}
