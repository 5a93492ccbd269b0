/**
 * @module worker: a cluster worker process: it carries traffic only. The primary sends it the config, the health
 * records, the ticket keys and the drains; it listens on the primary's sockets, reloads in two phases (prepare,
 * then commit or abort, so a reload is all workers or none), and answers the primary's admin queries (status,
 * metrics, failures, census, dashboard, certificates) with its own counts, which the primary merges.
 */
import { certificateList } from "../admin/certificates.ts"
import { dashboardData, runtimeDashboardSource } from "../admin/dashboard/data.ts"
import { liveMetrics } from "../admin/metrics-endpoint.ts"
import { AccessLog } from "../core/access-log.ts"
import { ConfigError, errorCode, errorMessage, PortcullisError } from "../core/errors.ts"
import { createLogger, type Logger } from "../core/log.ts"
import { PrettyStream } from "../core/pretty-log.ts"
import type { ListenTarget } from "../listeners/listener-socket.ts"
import { Runtime } from "../runtime.ts"
import { RuntimeState } from "../state/runtime-state.ts"
import { IpcCertificateFeed } from "./ipc-certificate-feed.ts"
import { IpcTicketKeyRing } from "./ipc-ticket-ring.ts"
import type { AcmeFeedStart, FromWorker, HealthSnapshot, QueryKind, ToWorker } from "./messages.ts"
import { WorkerRates } from "./worker-rates.ts"

/** runWorker runs until the primary says stop (or goes away); resolves with the exit code. */
export function runWorker(): Promise<number> {
  const index = process.env["PORTCULLIS_WORKER_INDEX"] ?? "?"
  const base =
    process.env["PORTCULLIS_LOG_FORMAT"] === "pretty"
      ? createLogger({ destination: new PrettyStream() })
      : createLogger()
  const log = base.child({ worker: Number(index) })
  return new Worker(log).run()
}

class Worker {
  readonly #log: Logger
  #runtime: Runtime | undefined
  #ring: IpcTicketKeyRing | undefined
  /**
   * The feeds of the primary's ACME managers by epoch: the running generation's, and while a reload with a new acme
   * section prepares, the new one's too (`#preparing`: the one the new generation is built on).
   */
  readonly #feeds = new Map<number, IpcCertificateFeed>()
  #preparing: IpcCertificateFeed | undefined
  /** On-demand requests waiting for the primary's answer, by id. */
  readonly #onDemand = new Map<number, (ok: boolean) => void>()
  readonly #accessLog: AccessLog
  /** The per-client tables' counts, shared with the other workers through the primary. */
  readonly #rates = new WorkerRates((msg) => this.#send(msg))
  readonly #pending = new Map<number, (msg: ToWorker) => void>()
  #nextId = 1
  #stopping: Promise<void> | undefined
  #exit: ((code: number) => void) | undefined

  constructor(log: Logger) {
    this.#log = log
    this.#accessLog = new AccessLog({ onError: (err) => log.warn({ code: errorCode(err) }, err.message) })
  }

  run(): Promise<number> {
    return new Promise((resolve) => {
      this.#exit = resolve
      process.on("message", (msg: ToWorker, handle: unknown) => this.#onMessage(msg, handle))
      // The primary went away (crashed, or SIGKILLed): finish what is in flight and go.
      process.on("disconnect", () => {
        // No primary to decide on-demand names: their handshakes get the fallback.
        for (const answer of this.#onDemand.values()) answer(false)
        this.#onDemand.clear()
        this.#stop(false)
      })
      // A terminal's Ctrl-C or systemd's SIGTERM reaches every process of the group: stop gracefully once.
      process.on("SIGTERM", () => this.#stop(false))
      process.on("SIGINT", () => this.#stop(false))
      // The primary reloads, restarts and reopens logs; the workers only follow it.
      for (const signal of ["SIGHUP", "SIGUSR1", "SIGUSR2"] as const) process.on(signal, () => {})
    })
  }

  #send(msg: FromWorker): void {
    // With a callback a send on a channel the primary just closed is an error passed here, not an 'error' event.
    if (process.connected) process.send!(msg, undefined, {}, ignore)
  }

  #onMessage(msg: ToWorker, handle: unknown): void {
    switch (msg.type) {
      case "start":
        this.#start(msg).catch((err: unknown) => {
          // Told to stop while it started: it never served, and #stop exits when the runtime is closed.
          if (this.#stopping) {
            this.#log.info({ err: errorMessage(err) }, "worker stopped before it served")
            return
          }
          this.#log.error({ err: errorMessage(err) }, "worker could not start")
          this.#send({ type: "failed", error: errorMessage(err) })
          this.#exit?.(1)
        })
        return
      case "handle":
      case "commit":
      case "abort": {
        const waiter = this.#pending.get(msg.id)
        this.#pending.delete(msg.id)
        if (msg.type === "handle" && handle) (msg as { handle?: unknown }).handle = handle
        waiter?.(msg)
        return
      }
      case "prepare":
        void this.#prepare(msg)
        return
      case "health":
        this.#runtime?.healthRegistry(msg.upstream).set(msg.backend, msg.record)
        return
      case "keys":
        this.#ring?.set(msg.keys)
        return
      case "spend":
        this.#rates.spend(msg.listener, msg.spends)
        return
      case "drain": {
        let answer: { draining: boolean } | { error: string }
        try {
          if (!this.#runtime) throw new PortcullisError("PC_NOT_RUNNING", "worker not started")
          this.#runtime.drain(msg.upstream, msg.backend, msg.on)
          answer = { draining: msg.on }
        } catch (err) {
          this.#log.warn({ err: errorMessage(err) }, "drain")
          answer = { error: errorMessage(err) }
        }
        if (msg.id !== undefined) this.#send({ type: "reply", id: msg.id, value: answer })
        return
      }
      case "query":
        this.#send({ type: "reply", id: msg.id, value: this.#query(msg.what) })
        return
      case "acme-cert": {
        const feed = this.#feeds.get(msg.epoch)
        for (const cert of msg.certs) feed?.take(cert)
        return
      }
      case "acme-challenge":
        // Every feed answers it: the CA's validation may reach the running generation or the one being prepared.
        for (const feed of this.#feeds.values()) feed.challenge(msg.change)
        this.#send({ type: "acme-ack", id: msg.id })
        return
      case "acme-on-demand": {
        const answer = this.#onDemand.get(msg.id)
        this.#onDemand.delete(msg.id)
        answer?.(msg.ok)
        return
      }
      case "reopen-log":
        try {
          this.#runtime?.reopenAccessLog()
        } catch (err) {
          this.#log.error({ code: errorCode(err) }, `reopening the access log: ${errorMessage(err)}`)
        }
        return
      case "stop":
        this.#stop(msg.handover)
        return
    }
  }

  /** #query answers one admin question from this worker's own state (counts and snapshots; the primary merges). */
  #query(what: QueryKind): unknown {
    const runtime = this.#runtime
    const gen = runtime?.generation
    if (!runtime || !gen) return undefined
    switch (what) {
      case "status":
        return { pid: process.pid, ...runtime.status() }
      case "metrics":
        return [...runtime.state.registry.snapshot(), ...liveMetrics(gen, undefined, runtime.drainingGenerations)]
      case "failures":
        return runtime.state.instruments.failures.recent()
      case "census":
        return gen.census()
      case "certificates":
        return certificateList(gen, (c) => runtime.ocspStatus(c))
      case "dashboard":
        return dashboardData(runtimeDashboardSource(runtime))
    }
  }

  #ask(msg: FromWorker & { id: number }): Promise<ToWorker> {
    return new Promise((resolve) => {
      this.#pending.set(msg.id, resolve)
      this.#send(msg)
    })
  }

  /** #listen asks the primary for the bound socket of a new address (it binds it the first time). */
  async #listen(key: string, address: { host: string; port: number }): Promise<ListenTarget> {
    const reply = (await this.#ask({ type: "listen", id: this.#nextId++, key, address })) as ToWorker & {
      handle?: object
      error?: string
    }
    if (!reply.handle) throw new PortcullisError("PC_LISTEN_FAILED", reply.error ?? `no socket for ${key}`)
    return reply.handle
  }

  #setHealth(health: HealthSnapshot): void {
    for (const [upstream, records] of Object.entries(health)) {
      const registry = this.#runtime!.healthRegistry(upstream)
      for (const [id, record] of Object.entries(records)) registry.set(id, record)
    }
  }

  /** #askOnDemand asks the primary to obtain a certificate for an on-demand name (the handshake waits for it). */
  #askOnDemand(name: string): Promise<boolean> {
    if (!process.connected) return Promise.resolve(false)
    const id = this.#nextId++
    return new Promise((resolve) => {
      this.#onDemand.set(id, resolve)
      this.#send({ type: "acme-on-demand", id, name })
    })
  }

  async #start(msg: Extract<ToWorker, { type: "start" }>): Promise<void> {
    this.#ring = new IpcTicketKeyRing(msg.keys, () => this.#send({ type: "rotate" }))
    // ACME is the primary's: this worker serves the certificates and challenge answers it pushes.
    const feed = this.#feedFor(msg.acme)
    const runtime = new Runtime(this.#log, new RuntimeState({ ticketKeys: this.#ring }), {
      accessLog: this.#accessLog,
      listen: (key, address) => this.#listen(key, address),
      probe: false,
      limiter: (listener, fleet, options) => this.#rates.limiter(listener, fleet, options),
      // Called when the acme section changed: the feed of the primary's new manager (sent with the prepare).
      acmeFeed: (config) => (this.#preparing ?? feed).configure(config.acme!),
    })
    this.#runtime = runtime
    this.#setHealth(msg.health)
    await runtime.start(msg.config)
    if (this.#stopping) throw new PortcullisError("PC_WORKER_STOPPING", "told to stop while it started")
    for (const [upstream, backend] of msg.drains) runtime.drain(upstream, backend, true)
    this.#send({ type: "ready", ports: runtime.ports() })
  }

  /** #feedFor makes the feed of one of the primary's ACME managers, kept by its epoch. */
  #feedFor(start: AcmeFeedStart | undefined): IpcCertificateFeed {
    const feed = new IpcCertificateFeed(start?.snapshot, (name) => this.#askOnDemand(name), this.#log)
    if (start) this.#feeds.set(start.epoch, feed)
    return feed
  }

  /** #prepare builds and binds the new generation, says so, and swaps only when the primary commits. */
  async #prepare(msg: Extract<ToWorker, { type: "prepare" }>): Promise<void> {
    const runtime = this.#runtime
    const before = new Set(this.#feeds.values())
    const next = msg.acme ? this.#feedFor(msg.acme) : undefined
    this.#preparing = next
    try {
      if (!runtime) throw new PortcullisError("PC_NOT_RUNNING", "worker not started")
      this.#setHealth(msg.health)
      await runtime.reload(msg.config, {
        prepare: async () => {
          const decision = await new Promise<ToWorker>((resolve) => {
            this.#pending.set(msg.id, resolve)
            this.#send({ type: "prepared", id: msg.id })
          })
          if (decision.type !== "commit") throw new PortcullisError("PC_RELOAD_ABORTED", "another worker refused it")
        },
        rollback: async () => {},
        commit: () => {},
      })
      // The runtime closed the old manager's feed when it swapped: it gets no more pushes.
      if (next) for (const [epoch, feed] of this.#feeds) if (before.has(feed)) this.#feeds.delete(epoch)
      this.#send({ type: "committed", id: msg.id })
    } catch (err) {
      if (next) {
        next.close()
        for (const [epoch, feed] of this.#feeds) if (feed === next) this.#feeds.delete(epoch)
      }
      const problems = err instanceof ConfigError ? err.problems : undefined
      this.#send({ type: "refused", id: msg.id, error: errorMessage(err), problems })
    } finally {
      this.#preparing = undefined
    }
  }

  /** #stop drains and exits; handover: other workers (or a new primary's) accept on the sockets now. */
  #stop(handover: boolean): void {
    this.#stopping ??= (async () => {
      this.#log.info("worker stopping; in-flight requests get the grace period")
      await this.#runtime?.close(undefined, { handover })
      if (!this.#runtime) await this.#accessLog.close()
    })().then(
      () => this.#exit?.(0),
      () => this.#exit?.(1),
    )
  }
}

function ignore(): void {}
