/**
 * @module primary: the cluster primary. It owns the config (a reload is checked here, then prepared by every worker
 * and committed by all or none), the listening sockets (bound here, handed to every worker), the active health
 * checks (one set of probes, pushed to the workers), ACME (one AcmeManager: orders, renewals, challenges and
 * on-demand decisions here; certificates and challenge answers pushed to every worker), the ticket-key ring and the
 * fleet store; workers carry traffic.
 * A crashed worker is replaced with exponential backoff; restart() replaces them one by one.
 */

import { certificateList } from "../admin/certificates.ts"
import { type DashboardData, dashboardData } from "../admin/dashboard/data.ts"
import { renderMetrics } from "../admin/metrics-endpoint.ts"
import type { FleetStore } from "../cluster/shared/fleet-store.ts"
import type { Config } from "../config/schema.ts"
import { ConfigError, errorCode, errorMessage, PortcullisError } from "../core/errors.ts"
import type { Logger } from "../core/log.ts"
import { addressKey } from "../listeners/listener-socket.ts"
import { acmeKey, createAcmeManager, Generation, type ReloadStep } from "../runtime.ts"
import type { MetricSnapshot } from "../state/registry.ts"
import type { RuntimeState } from "../state/runtime-state.ts"
import { ringSchedule, TicketRotation } from "../state/ticket-rotation.ts"
import type { ChallengeChange } from "../tls/acme/feed.ts"
import type { AcmeManager } from "../tls/acme/manager.ts"
import type { HealthRegistry } from "../upstreams/health/active.ts"
import { type CensusAnswer, mergeCensus, mergeMetrics, mergeStatus } from "./aggregate.ts"
import { mergeDashboard } from "./aggregate-dashboard.ts"
import type { InheritedFds } from "./inherited-fds.ts"
import { wireKeys } from "./ipc-ticket-ring.ts"
import { ListenHandles } from "./listen-handles.ts"
import type { HealthSnapshot, QueryKind } from "./messages.ts"
import { PrimaryRates } from "./primary-rates.ts"
import { WorkerProcess } from "./worker-process.ts"

/** PrimaryOptions: how many workers, the program they run, the state the primary owns, and backoff timings. */
export interface PrimaryOptions {
  workers: number
  script: string
  log: Logger
  state: RuntimeState
  fleet?: FleetStore | undefined
  inherited: InheritedFds
  /** First delay before a crashed worker is replaced (doubles per quick crash, default 100 ms). */
  backoffMs?: number
  /** Longest delay between replacements of a worker that keeps crashing (default 30 s). */
  maxBackoffMs?: number
  /** How long a worker may take to start (default 30 s). */
  startTimeoutMs?: number
}

/** WorkerRef: which worker answered (or did not): its slot and pid. */
export interface WorkerRef {
  worker: number
  pid: number | null
}

/**
 * Answered: which workers an aggregated admin answer is made of, and which were left out (did not answer within
 * the deadline, worker-process.ts QUERY_DEADLINE_MS, or could not), each with why. Every cluster answer has it.
 */
export interface Answered<T = unknown> {
  answered: (WorkerRef & T)[]
  missing: (WorkerRef & { error: string })[]
}

interface Gathered<T> {
  values: { ref: WorkerRef; value: T }[]
  missing: Answered["missing"]
}
/** How long a challenge answer waits for each worker to have it before the CA is asked to validate anyway. */
const CHALLENGE_ACK_MS = 5_000

/** A worker that served this long (ms) had no quick crash: its slot's backoff starts again from the first delay. */
const STABLE_MS = 10_000

/** AcmeEntry: an ACME manager, the config key it was made for, and its epoch (what its certificates are tagged with). */
interface AcmeEntry {
  key: string
  manager: AcmeManager
  epoch: number
}

interface Slot {
  worker: WorkerProcess | undefined
  /** The worker being started for this slot (a replacement or a restart's), not serving yet. */
  starting: WorkerProcess | undefined
  /** Crashes in a row of workers that lived less than STABLE_MS. */
  crashes: number
  restarts: number
  timer: NodeJS.Timeout | undefined
}

/** Primary runs the workers and answers for them (status, metrics, ready). */
export class Primary {
  readonly #options: PrimaryOptions
  readonly #log: Logger
  readonly #handles: ListenHandles
  readonly #health = new Map<string, HealthRegistry>()
  readonly #watched = new Set<string>()
  readonly #slots: Slot[] = []
  /** Workers started but not yet serving: ACME pushes reach them too (they got the snapshot before those). */
  readonly #starting = new Set<WorkerProcess>()
  #current: Generation | undefined
  /**
   * The running config's ACME manager, kept while its acme section (and data_dir) stays the same. `epoch` numbers
   * the managers: a worker keeps one certificate feed per epoch, so a reload's new manager fills its own feed (the
   * new generation's) from the prepare on, and never the running one's.
   */
  #acme: AcmeEntry | undefined
  #acmeEpoch = 0
  #nextId = 1
  #reloading: Promise<void> | undefined
  #closing = false
  readonly #unwatchKeys: () => void
  /** The ring is the primary's: its `session_tickets` schedule rotates it here, and workers get the keys. */
  readonly #rotation: TicketRotation
  /** The workers' per-client counts, passed between them (and to the fleet store for scope fleet). */
  readonly #rates: PrimaryRates

  constructor(options: PrimaryOptions) {
    this.#options = options
    this.#log = options.log
    this.#handles = new ListenHandles(options.inherited)
    for (let i = 0; i < options.workers; i++) {
      this.#slots.push({ worker: undefined, starting: undefined, crashes: 0, restarts: 0, timer: undefined })
    }
    this.#unwatchKeys = options.state.ticketKeys.onChange((ring) =>
      this.#broadcast({ type: "keys", keys: wireKeys(ring) }),
    )
    this.#rotation = new TicketRotation(options.state.ticketKeys, this.#log)
    this.#rates = new PrimaryRates(options.fleet, () => this.#alive())
  }

  get state(): RuntimeState {
    return this.#options.state
  }

  /** generation is the primary's own build of the running config: its health checks run here (nothing is bound). */
  get generation(): Generation | undefined {
    return this.#current
  }

  /** ready: every worker serves and the primary is not shutting down (GET /readyz). */
  get ready(): boolean {
    return !this.#closing && this.#current !== undefined && this.#slots.every((s) => s.worker?.ready === true)
  }

  /** start checks the config, runs the first round of health checks, then starts every worker and waits for them. */
  async start(config: Config): Promise<void> {
    const { gen, acme } = await this.#build(config)
    this.#current = gen
    this.#acme = acme
    this.#rotation.apply(ringSchedule(gen.config.listeners.flatMap((l) => (l.tls ? [l.tls] : []))))
    this.#nextId++
    try {
      await Promise.all(this.#slots.map((_, i) => this.#spawn(i, true)))
    } catch (err) {
      await this.close(0)
      throw err
    }
    this.#handles.retain(this.#keys(config))
    this.#log.info({ generation: gen.id, workers: this.#slots.length }, "started")
  }

  /**
   * #build makes the primary's own generation (never bound: its health checks and ACME sources run here) with the
   * ACME manager of the config: the running one while the acme section is unchanged, else a new one.
   */
  async #build(config: Config): Promise<{ gen: Generation; acme: AcmeEntry | undefined }> {
    const acme = this.#acmeFor(config)
    const newAcme = acme !== undefined && acme !== this.#acme
    let gen: Generation
    try {
      gen = await Generation.build(
        this.#nextId,
        config,
        this.#log,
        this.#health,
        this.#current,
        this.#options.state,
        undefined,
        this.#options.fleet,
        acme?.manager,
      )
    } catch (err) {
      if (newAcme) acme.manager.close()
      throw err
    }
    try {
      await gen.start()
    } catch (err) {
      gen.destroy()
      if (newAcme) acme.manager.close()
      throw err
    }
    for (const [name, registry] of this.#health) {
      if (this.#watched.has(name)) continue
      this.#watched.add(name)
      registry.onChange((backend, record) =>
        this.#broadcast({ type: "health", upstream: name, backend, record: { ...record } }),
      )
    }
    return { gen, acme }
  }

  #acmeFor(config: Config): AcmeEntry | undefined {
    if (!config.acme) return undefined
    const key = acmeKey(config)
    if (this.#acme?.key === key) return this.#acme
    const { log, state, fleet } = this.#options
    const epoch = ++this.#acmeEpoch
    const manager: AcmeManager = createAcmeManager(config, log, state, fleet, {
      relay: (change) => this.#relay(change),
      // Tagged with the manager's epoch: a worker puts it in that manager's feed (one it prepared, or the running one).
      onCertificate: (cert) => {
        for (const w of this.#acmeWorkers()) w.send({ type: "acme-cert", epoch, certs: [cert] })
      },
    })
    return { key, manager, epoch }
  }

  /**
   * #relay gives every worker a challenge answer (or withdraws it) and waits until each has it in effect (or
   * CHALLENGE_ACK_MS), so the CA's validation request finds it whichever worker accepts it.
   */
  async #relay(change: ChallengeChange): Promise<void> {
    const workers = this.#acmeWorkers()
    const withdrawn = change.type === "http-01" ? change.keyAuthorization === undefined : change.cert === undefined
    const acks = workers.map((w) => {
      const id = w.nextId()
      const ack = w.wait(["acme-ack"], id, CHALLENGE_ACK_MS)
      w.send({ type: "acme-challenge", id, change })
      return ack
    })
    // A withdrawal need not wait: the CA has validated (or given up) by then.
    if (withdrawn) {
      for (const ack of acks) ack.catch(() => {})
      return
    }
    const settled = await Promise.allSettled(acks)
    const late = settled.flatMap((s, i) => (s.status === "rejected" ? [workers[i]!.index] : []))
    if (late.length > 0) {
      this.#log.warn(
        { workers: late, challenge: change.type },
        "acme challenge: not every worker confirmed it; validating anyway",
      )
    }
  }

  /** #acmeWorkers: every live worker, serving or starting (a retiring one is leaving: it gets nothing new). */
  #acmeWorkers(): WorkerProcess[] {
    const out = new Set<WorkerProcess>(this.#starting)
    for (const s of this.#slots) if (s.worker && !s.worker.retired) out.add(s.worker)
    return [...out].filter((w) => w.alive)
  }

  /** #onDemand decides an on-demand name a worker asked about (the ask URL, rate and cap are the primary's). */
  async #onDemand(name: string): Promise<boolean> {
    const request = this.#acme?.manager.onDemand?.request(name)
    return request ? await request : false
  }

  #keys(config: Config): string[] {
    return config.listeners.map((l) => addressKey(l.address))
  }

  #healthSnapshot(): HealthSnapshot {
    const out: HealthSnapshot = {}
    for (const [name, registry] of this.#health) out[name] = registry.snapshot()
    return out
  }

  #drains(): [string, string][] {
    const out: [string, string][] = []
    for (const u of this.#current?.upstreams.values() ?? []) {
      for (const b of u.backends) if (b.state === "draining") out.push([u.name, b.id])
    }
    return out
  }

  #broadcast(msg: Parameters<WorkerProcess["send"]>[0]): void {
    for (const s of this.#slots) if (s.worker?.alive) s.worker.send(msg)
  }

  /**
   * #spawn starts the worker of slot i on the running config and resolves when it serves. `retireOnFailure`: a
   * worker that does not come up is stopped and the error thrown (start, rolling restart); otherwise its exit
   * counts as a crash of the slot and is retried with backoff.
   */
  async #spawn(i: number, retireOnFailure: boolean): Promise<WorkerProcess> {
    if (this.#closing) throw stopping(i)
    const slot = this.#slots[i]!
    // A newer start for the slot (a restart while a crashed worker's replacement starts) supersedes the older one.
    if (slot.starting) this.#retire(slot.starting)
    const worker = new WorkerProcess({
      index: i,
      script: this.#options.script,
      handle: (key, address) => this.#handles.get(key, address),
      onRotate: () => this.#options.state.ticketKeys.rotate(),
      onRates: (from, msg) => this.#rates.counts(from, msg),
      onDemand: (name) => this.#onDemand(name),
    })
    slot.starting = worker
    this.#starting.add(worker)
    void worker.exited.then(({ code, signal }) => {
      this.#starting.delete(worker)
      if (slot.starting === worker) slot.starting = undefined
      this.#onExit(i, worker, code, signal)
    })
    const ready = worker.wait(["ready"], undefined, this.#options.startTimeoutMs ?? 30_000)
    const sent = this.#current!
    worker.send({
      type: "start",
      config: sent.config,
      health: this.#healthSnapshot(),
      keys: wireKeys(this.#options.state.ticketKeys),
      drains: this.#drains(),
      acme: this.#acme && { epoch: this.#acme.epoch, snapshot: this.#acme.manager.snapshot() },
    })
    const msg = await ready
      .catch((err: unknown) => {
        // Told to stop while it started (shutdown, or superseded): its exit is no crash, and no error of its own.
        if (worker.retired) throw this.#closing ? stopping(i) : superseded(i)
        worker.retired = retireOnFailure
        worker.child.kill("SIGKILL")
        throw err
      })
      .finally(() => {
        this.#starting.delete(worker)
        if (slot.starting === worker) slot.starting = undefined
      })
    if (msg.type === "failed") {
      if (worker.retired) throw this.#closing ? stopping(i) : superseded(i)
      worker.retired = retireOnFailure
      throw new PortcullisError("PC_WORKER_FAILED", `worker ${i}: ${msg.error}`)
    }
    // It answered ready, but the primary told it to stop meanwhile (a drain, a newer start): it never serves.
    if (worker.retired) throw this.#closing ? stopping(i) : superseded(i)
    if (sent !== this.#current) {
      // A reload committed while it started: it holds the config that lost. Start it again on the one that won.
      this.#retire(worker)
      return this.#spawn(i, retireOnFailure)
    }
    worker.ready = true
    worker.readyAt = Date.now()
    // The slot's worker now (not the one when this start began: a replacement may have come up in between).
    const old = slot.worker
    slot.worker = worker
    if (old && old !== worker) this.#retire(old)
    this.#log.info({ worker: i, pid: worker.pid }, "worker ready")
    return worker
  }

  /** #retire tells an old worker to stop: it closes its listening copy now and drains in-flight work in the grace. */
  #retire(worker: WorkerProcess, handover = true): void {
    worker.retired = true
    worker.ready = false
    worker.send({ type: "stop", handover })
  }

  #onExit(i: number, worker: WorkerProcess, code: number | null, signal: NodeJS.Signals | null): void {
    const slot = this.#slots[i]!
    if (worker.retired || this.#closing) return
    worker.ready = false
    // Served less than STABLE_MS (or never): a quick crash. Counted from ready, so a slow start is no long life.
    const quick = worker.readyAt === undefined || Date.now() - worker.readyAt < STABLE_MS
    slot.crashes = quick ? slot.crashes + 1 : 1
    const base = this.#options.backoffMs ?? 100
    const delay = Math.min(this.#options.maxBackoffMs ?? 30_000, base * 2 ** (slot.crashes - 1))
    this.#log.error(
      { worker: i, pid: worker.pid, code, signal, restart_in_ms: delay },
      `worker ${i} exited (${signal ?? code}); replacing it`,
    )
    slot.timer = setTimeout(() => {
      slot.timer = undefined
      if (this.#closing) return
      slot.restarts++
      this.#replace(i).catch((err: unknown) => this.#log.error({ worker: i, err: errorMessage(err) }, "worker start"))
    }, delay)
  }

  /** #replace starts slot i anew once no reload is in progress (so the worker gets the config that won). */
  async #replace(i: number): Promise<void> {
    while (this.#reloading) await this.#reloading.catch(() => {})
    if (this.#closing) return
    await this.#spawn(i, false).catch((err: unknown) => {
      // A restart's worker took the slot, or the primary drains: nothing went wrong.
      if (errorCode(err) !== "PC_WORKER_SUPERSEDED" && errorCode(err) !== "PC_WORKER_STOPPING") throw err
    })
  }

  /**
   * reload checks the config here (the whole build, plus the first health round of new backends), then asks every
   * worker to build and bind it (prepare); only when all of them have, and step.prepare succeeded, does each swap
   * (commit). One refusal aborts it everywhere: every worker keeps the running config.
   */
  async reload(config: Config, step?: ReloadStep): Promise<void> {
    while (this.#reloading) await this.#reloading.catch(() => {})
    if (this.#closing) throw new PortcullisError("PC_RELOAD_STOPPING", "shutting down: no reload")
    const run = this.#apply(config, step)
    this.#reloading = run
    try {
      await run
    } finally {
      this.#reloading = undefined
    }
  }

  async #apply(config: Config, step?: ReloadStep): Promise<void> {
    const { gen, acme } = await this.#build(config)
    const newAcme = acme !== undefined && acme !== this.#acme
    const workers = this.#slots.map((s) => s.worker).filter((w): w is WorkerProcess => w?.ready === true)
    const id = this.#nextId
    const health = this.#healthSnapshot()
    const answers = workers.map((w) => w.wait(["prepared", "refused"], id, 60_000))
    // A new acme section: the workers build the new generation on a feed of the new manager's own (what it holds
    // now; what it takes later comes tagged with its epoch), as one process builds it on the new manager.
    const feed = newAcme ? { epoch: acme.epoch, snapshot: acme.manager.snapshot() } : undefined
    for (const w of workers) w.send({ type: "prepare", id, config, health, acme: feed })
    const settled = await Promise.allSettled(answers)
    let refusal: Error | undefined
    for (const [i, s] of settled.entries()) {
      if (s.status === "rejected") refusal ??= s.reason as Error
      else if (s.value.type === "refused") {
        const problems = s.value.problems as ConfigError["problems"] | undefined
        refusal ??= problems
          ? new ConfigError(problems)
          : new PortcullisError("PC_RELOAD_REFUSED", `worker ${workers[i]!.index}: ${s.value.error}`)
      }
    }
    let prepared = false
    if (!refusal && step) {
      try {
        prepared = true
        await step.prepare()
      } catch (err) {
        refusal = err as Error
      }
    }
    if (refusal) {
      for (const w of workers) w.send({ type: "abort", id })
      gen.destroy()
      if (newAcme) acme.manager.close()
      if (prepared) await step?.rollback()
      this.#handles.retain(this.#keys(this.#current!.config))
      throw refusal
    }
    const committed = workers.map((w) => w.wait(["committed", "refused"], id, 60_000).catch(() => undefined))
    for (const w of workers) w.send({ type: "commit", id })
    await Promise.all(committed)
    this.#nextId++
    const old = this.#current
    this.#current = gen
    if (acme !== this.#acme) {
      this.#acme?.manager.close()
      this.#acme = acme
    }
    this.#rotation.apply(ringSchedule(gen.config.listeners.flatMap((l) => (l.tls ? [l.tls] : []))))
    step?.commit()
    this.#handles.retain(this.#keys(config))
    if (old) {
      old.stopHealthChecks()
      void old.close(0)
      // The old generation stopped watching its sources: certificates only it served stop renewing.
      if (!newAcme) acme?.manager.prune()
    }
    this.#log.info({ generation: gen.id, workers: workers.length }, "reloaded")
  }

  /**
   * restart replaces the workers one by one: the new one serves before the old one stops accepting; the old one
   * finishes its connections within shutdown_grace (WebSockets are closed at its end). Resolves when every slot has
   * a new worker. The new workers run the program as it is on disk now.
   */
  async restart(): Promise<{ workers: number[] }> {
    while (this.#reloading) await this.#reloading.catch(() => {})
    if (this.#closing) throw new PortcullisError("PC_RESTART_STOPPING", "shutting down: no restart")
    const pids: number[] = []
    for (let i = 0; i < this.#slots.length; i++) {
      const slot = this.#slots[i]!
      if (slot.timer) {
        clearTimeout(slot.timer)
        slot.timer = undefined
      }
      const worker = await this.#spawn(i, true)
      slot.restarts++
      pids.push(worker.pid ?? 0)
    }
    this.#log.info({ workers: pids }, "workers restarted")
    return { workers: pids }
  }

  /**
   * drain sets a backend draining (or back) here (which checks the names: unknown ones throw) and in every
   * serving worker, and resolves with which workers applied it within the deadline (a worker started later gets
   * the drains with its start message).
   */
  async drain(upstream: string, backend: string, on: boolean): Promise<{ workers: Answered<{ draining: boolean }> }> {
    if (!this.#current) throw new PortcullisError("PC_NOT_RUNNING", "not running")
    this.#current.drainBackend(upstream, backend, on)
    const workers = this.#serving()
    for (const w of this.#slots.map((s) => s.worker)) {
      // Starting or retiring workers: one-way (a starting one reads the drains from its start message too).
      if (w?.alive && !workers.includes(w)) w.send({ type: "drain", upstream, backend, on })
    }
    const gathered = await this.#ask(workers, (w) =>
      w.request({ type: "drain", id: w.nextId(), upstream, backend, on }),
    )
    const answered: Answered<{ draining: boolean }> = { answered: [], missing: gathered.missing }
    for (const { ref, value } of gathered.values) {
      const v = value as { draining?: boolean; error?: string }
      if (typeof v.draining === "boolean") answered.answered.push({ ...ref, draining: v.draining })
      else answered.missing.push({ ...ref, error: v.error ?? "no answer" })
    }
    this.#log.info(
      { upstream, backend, draining: on, workers: answered.answered.length, missing: answered.missing.length },
      on ? "backend draining" : "backend back in service",
    )
    return { workers: answered }
  }

  /** reopenAccessLog asks every worker to reopen the access log file (SIGUSR1). */
  reopenAccessLog(): void {
    this.#broadcast({ type: "reopen-log" })
  }

  /** ports maps listener names to their bound ports. */
  ports(): Record<string, number> {
    const out: Record<string, number> = {}
    for (const l of this.#current?.config.listeners ?? []) {
      const port = this.#handles.port(addressKey(l.address))
      if (port) out[l.name] = port
    }
    return out
  }

  /** listenFds maps each bound address to its socket's descriptor (a successor process inherits them). */
  listenFds(): Map<string, number> {
    return this.#handles.fds()
  }

  /** #alive: the slots' workers that run now (starting or serving), the ones rate counts are relayed to. */
  #alive(): WorkerProcess[] {
    return this.#slots.map((s) => s.worker).filter((w): w is WorkerProcess => w?.alive === true)
  }

  #serving(): WorkerProcess[] {
    return this.#slots.map((s) => s.worker).filter((w): w is WorkerProcess => w?.ready === true && w.alive)
  }

  /**
   * #gather asks every serving worker one admin question at once and waits at most the deadline for each: a
   * worker that has not answered by then (stopped, busy, exiting) is left out, listed in `missing` with why.
   */
  #gather<T>(what: QueryKind): Promise<Gathered<T>> {
    return this.#ask(this.#serving(), (w) => w.query(what)) as Promise<Gathered<T>>
  }

  async #ask(workers: WorkerProcess[], ask: (w: WorkerProcess) => Promise<unknown>): Promise<Gathered<unknown>> {
    const settled = await Promise.allSettled(workers.map(ask))
    const out: Gathered<unknown> = { values: [], missing: [] }
    for (const [i, s] of settled.entries()) {
      const ref = { worker: workers[i]!.index, pid: workers[i]!.pid ?? null }
      if (s.status === "rejected") out.missing.push({ ...ref, error: errorMessage(s.reason) })
      else if (s.value === undefined) out.missing.push({ ...ref, error: `worker ${ref.worker} is not serving` })
      else out.values.push({ ref, value: s.value })
    }
    // Slots with no serving worker (starting, or waiting to be replaced) are left out too.
    for (const [i, slot] of this.#slots.entries()) {
      if (!workers.some((w) => w.index === i)) {
        out.missing.push({ worker: i, pid: slot.worker?.pid ?? null, error: `worker ${i} is not serving` })
      }
    }
    out.missing.sort((a, b) => a.worker - b.worker)
    return out
  }

  #workersStatus() {
    return this.#slots.map((s, i) => ({
      worker: i,
      pid: s.worker?.pid ?? null,
      ready: s.worker?.ready === true,
      restarts: s.restarts,
      started_at: s.worker ? new Date(s.worker.startedAt).toISOString() : null,
    }))
  }

  /** status merges the workers' snapshots (counts summed), with the primary's health records and worker list. */
  async status(): Promise<Record<string, unknown>> {
    const gen = this.#current
    if (!gen) throw new PortcullisError("PC_NOT_RUNNING", "not running")
    const gathered = await this.#gather<Record<string, unknown>>("status")
    const live = gathered.values.map((v) => v.value)
    const merged = (live.length > 0 ? mergeStatus(live) : gen.status()) as Record<string, unknown>
    delete merged["pid"]
    const own = gen.status()
    const upstreams = merged["upstreams"] as { name: string; health: unknown }[] | undefined
    for (const u of upstreams ?? []) u.health = own.upstreams.find((o) => o.name === u.name)?.health
    // Per worker: its open connections and the connections it accepted (how the kernel spread the accepts).
    const perWorker = this.#workersStatus().map((w) => {
      const s = live.find((x) => (x as { pid?: number }).pid === w.pid) as
        | { listeners?: { connections?: number; accepted?: number }[] }
        | undefined
      const sum = (key: "connections" | "accepted") => s?.listeners?.reduce((n, l) => n + (l[key] ?? 0), 0) ?? 0
      // answered: its counts are in this answer (false: it did not answer within the deadline, or is not serving).
      return { ...w, answered: s !== undefined, connections: sum("connections"), accepted: sum("accepted") }
    })
    return { ...merged, generation: gen.id, ports: this.ports(), workers: perWorker }
  }

  /** metrics is the Prometheus text of every worker's families summed, the primary's own, and the worker gauges. */
  async metrics(): Promise<string> {
    const gathered = await this.#gather<MetricSnapshot[]>("metrics")
    const sets = gathered.values.map((v) => v.value).filter((s) => Array.isArray(s))
    const slots = this.#slots
    const cluster: MetricSnapshot[] = [
      {
        name: "portcullis_cluster_workers",
        help: "worker processes serving now",
        type: "gauge",
        series: [{ labels: {}, value: slots.filter((s) => s.worker?.ready).length }],
      },
      {
        name: "portcullis_cluster_worker_restarts_total",
        help: "workers started again after a crash or by a rolling restart",
        type: "counter",
        series: slots.map((s, i) => ({ labels: { worker: String(i) }, value: s.restarts })),
      },
      {
        name: "portcullis_cluster_workers_unanswered",
        help: "workers whose series are missing from this scrape (no answer within the deadline, or not serving)",
        type: "gauge",
        series: [{ labels: {}, value: gathered.missing.length }],
      },
    ]
    return renderMetrics(mergeMetrics([this.#options.state.registry.snapshot(), ...sets, cluster]))
  }

  /** failures is every worker's recent handshake failures, newest first (the last 100 of the group). */
  async failures(): Promise<{ failures: unknown[]; workers: Answered }> {
    const gathered = await this.#gather<{ time: string }[]>("failures")
    const all = gathered.values.flatMap((v) => v.value).sort((a, b) => (a.time < b.time ? 1 : -1))
    return { failures: all.slice(0, 100), workers: answered(gathered, () => ({})) }
  }

  /**
   * census is GET /tls/clients for the group: every worker's ClientHello counts, asked now (never per handshake),
   * added up (aggregate.ts mergeCensus), with each worker's share of the clients and the workers left out.
   */
  async census(): Promise<CensusAnswer & { workers: Answered<{ clients: number }> }> {
    const gathered = await this.#gather<CensusAnswer>("census")
    return {
      ...mergeCensus(gathered.values.map((v) => v.value)),
      workers: answered(gathered, (c) => ({
        clients: Object.values(c.listeners).reduce((n, l) => n + l.clients, 0),
      })),
    }
  }

  /** dashboard is GET /dashboard/data for the group: the workers' snapshots added up (aggregate-dashboard.ts). */
  async dashboard(instances?: unknown): Promise<DashboardData & { workers: Answered }> {
    const gen = this.#current
    const gathered = await this.#gather<DashboardData>("dashboard")
    // No worker answered: the primary's own build still shows the listeners, upstreams and certificates (no counts).
    const snapshots =
      gathered.values.length > 0 || !gen
        ? gathered.values.map((v) => v.value)
        : [dashboardData({ state: this.#options.state, generation: gen })]
    const merged = mergeDashboard(snapshots, {
      time: Date.now(),
      generation: gen?.id ?? 0,
      loaded_at: gen?.createdAt.toISOString(),
      ports: this.ports(),
      instances: instances ?? null,
    })
    return { ...merged, workers: answered(gathered, () => ({})) }
  }

  /**
   * certificates is GET /certificates as the workers serve them: the rows of the first worker that answers (the
   * same certificates in each), its OCSP state, `stapled` only where every answering worker staples; the
   * primary's own build of the config when none answers (then without OCSP state).
   */
  async certificates(): Promise<{ certificates: unknown[]; workers: Answered }> {
    const gathered = await this.#gather<ReturnType<typeof certificateList>>("certificates")
    const lists = gathered.values.map((v) => v.value.certificates)
    const rows = lists[0] ?? certificateList(this.#current).certificates
    for (const row of rows) {
      for (const other of lists.slice(1)) {
        const same = other.find((o) => o.listener === row.listener && o.fingerprint256 === row.fingerprint256)
        if (!same?.ocsp.stapled) row.ocsp.stapled = false
      }
    }
    return { certificates: rows, workers: answered(gathered, () => ({})) }
  }

  /**
   * close stops every worker (each closes its listening copy, then finishes in-flight work within its grace),
   * waits for them to exit (SIGKILL after grace + 5 s), then closes the sockets and the health checks.
   */
  async close(graceMs?: number, options: { handover?: boolean } = {}): Promise<void> {
    this.#closing = true
    this.#unwatchKeys()
    this.#rotation.close()
    this.#rates.close()
    const grace = graceMs ?? this.#current?.config.shutdown_grace ?? 30_000
    // Starting workers too: one that comes up after this would otherwise serve on after the primary drains.
    const workers = [
      ...new Set([
        ...this.#slots.map((s) => s.worker).filter((w): w is WorkerProcess => w !== undefined),
        ...this.#starting,
      ]),
    ]
    for (const s of this.#slots) if (s.timer) clearTimeout(s.timer)
    for (const w of workers) this.#retire(w, options.handover === true)
    await Promise.all(
      workers.map(async (w) => {
        const timer = setTimeout(() => w.child.kill("SIGKILL"), grace + 5_000)
        await w.exited
        clearTimeout(timer)
      }),
    )
    this.#handles.close()
    const gen = this.#current
    gen?.stopHealthChecks()
    await gen?.close(0)
    this.#acme?.manager.close()
    this.#acme = undefined
    this.#options.state.close()
  }
}

/** stopping: the primary drains, so a worker it was starting never serves. */
function stopping(i: number): PortcullisError {
  return new PortcullisError("PC_WORKER_STOPPING", `worker ${i}: the primary is shutting down; it was not started`)
}

/** superseded: a newer start for the same slot took over from this one before it served. */
function superseded(i: number): PortcullisError {
  return new PortcullisError("PC_WORKER_SUPERSEDED", `worker ${i}: superseded by a newer start for the slot`)
}

/** answered turns a gathering into the `workers` part of an answer: who answered (with `extra` of its value). */
function answered<T, E extends object>(gathered: Gathered<T>, extra: (value: T) => E): Answered<E> {
  return {
    answered: gathered.values.map((v) => ({ ...v.ref, ...extra(v.value) })),
    missing: gathered.missing,
  }
}
