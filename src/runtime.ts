/** @module runtime: builds a generation from a Config, binds listener sockets, and swaps generations on reload. */
import type net from "node:net"
import type { FleetStore } from "./cluster/shared/fleet-store.ts"
import { BuildError, type BuildProblem, type ConfigPath, problemsOf } from "./config/problems.ts"
import type { Config, HostPort, UpstreamConfig } from "./config/schema.ts"
import type { AccessLog } from "./core/access-log.ts"
import { errorMessage, PortcullisError } from "./core/errors.ts"
import type { Logger } from "./core/log.ts"
import { ClientGate } from "./listeners/limits/client-gate.ts"
import { ClientLimiter, type ClientLimiterOptions } from "./listeners/limits/client-limiter.ts"
import { addressKey, ListenerSocket, type ListenTarget } from "./listeners/listener-socket.ts"
import { RedirectListener } from "./listeners/redirect-listener.ts"
import { type Engine, TlsListener } from "./listeners/tls-listener.ts"
import { HttpEngine } from "./proxy/http/engine.ts"
import { TcpEngine } from "./proxy/tcp/engine.ts"
import { Router } from "./routing/router.ts"
import type { CertificateEvent } from "./state/instruments.ts"
import { RuntimeState } from "./state/runtime-state.ts"
import { ringSchedule, TicketRotation } from "./state/ticket-rotation.ts"
import type { CertificateFeed } from "./tls/acme/feed.ts"
import { AcmeManager, type AcmeManagerOptions } from "./tls/acme/manager.ts"
import { selectCertificateStorage } from "./tls/acme/select-storage.ts"
import { CertStore, type LoadedCertificate } from "./tls/cert-store.ts"
import type { ListenerCensus } from "./tls/client-census.ts"
import { OcspStapler, type OcspStaplerOptions } from "./tls/ocsp/stapler.ts"
import { checkServedCertificate, loopbackFor } from "./tls/self-check.ts"
import { certificateSource } from "./tls/sources/index.ts"
import { HealthRegistry } from "./upstreams/health/active.ts"
import { Upstream } from "./upstreams/upstream.ts"

type ListenerHandler = TlsListener | RedirectListener

/**
 * ListenSource gives the socket a new address listens on instead of binding it here: a cluster worker gets the
 * primary's bound handle, a process taking over from an older one gets an inherited file descriptor. undefined:
 * bind it here.
 */
export type ListenSource = (key: string, address: HostPort) => Promise<ListenTarget | undefined>

/** RuntimeOptions: the access log writer, the fleet store, where sockets come from, and whether health probes. */
export interface RuntimeOptions {
  accessLog?: AccessLog
  fleet?: FleetStore | undefined
  listen?: ListenSource | undefined
  /** false: active health follows the records set through healthRegistry() (a cluster worker). Default true. */
  probe?: boolean | undefined
  /** the OCSP fetcher's timings (tests shorten the retry) */
  ocsp?: Omit<OcspStaplerOptions, "log" | "count">
  /**
   * After every start, reload and in-place swap, handshake with the listener for each name of the certificates put
   * in, within timeoutMs each, and warn when another leaf is served (main.ts turns it on; the handshakes count in
   * the listener's metrics like any other).
   */
  selfCheck?: false | { timeoutMs: number }
  /**
   * limiter makes the per-client table of a listener with limits in place of this process's own (a cluster
   * worker's, whose counts are shared with the other workers through the primary; `fleet` is the listener's
   * scope). Default: a table of this process, counted in the fleet store with scope fleet.
   */
  limiter?: LimiterSource | undefined
  /**
   * Where a config's ACME certificates come from instead of a manager of this runtime's own: a cluster worker reads
   * the primary's over IPC. Called when the acme section (or data_dir) changed; it may return the same feed again.
   */
  acmeFeed?: ((config: Config) => CertificateFeed) | undefined
}

/** LimiterSource makes one listener's per-client table; see RuntimeOptions.limiter. */
export type LimiterSource = (listener: string, fleet: boolean, options: ClientLimiterOptions) => ClientLimiter

/** GenerationServices: runtime-owned parts a generation uses but does not own. */
export interface GenerationServices {
  /** keeps OCSP staples for the certificates of listeners with tls.ocsp_stapling */
  stapler?: OcspStapler | undefined
  /** told when a listener's store swapped an entry's certificates in place (CertStore.replace) */
  onReplaced?: (listener: string, entry: number) => void
  /** makes the listeners' per-client tables (RuntimeOptions.limiter) */
  limiter?: LimiterSource | undefined
}

/** Generation is everything built from one config: cert stores, routers, upstreams, engines. */
export class Generation {
  readonly id: number
  readonly config: Config
  readonly listeners = new Map<string, ListenerHandler>()
  readonly upstreams = new Map<string, Upstream>()
  /** Per-client limits by listener address, for listeners that set them. */
  readonly gates = new Map<string, ClientGate>()
  readonly createdAt = new Date()
  /** Certificates this generation asked the stapler to keep staples for (released when it goes). */
  readonly #stapled: LoadedCertificate[] = []
  #stapler: OcspStapler | undefined

  private constructor(id: number, config: Config) {
    this.id = id
    this.config = config
  }

  /**
   * build makes a generation without binding anything; a failure leaves nothing running. Health records come from
   * `registries` (by upstream name, kept across reloads); drain and ejection state from the `previous` generation;
   * counters, client gate tables and the ticket key ring from `state` (the runtime's; a fresh one when built alone).
   */
  static async build(
    id: number,
    config: Config,
    log: Logger,
    registries?: Map<string, HealthRegistry>,
    previous?: Generation,
    state: RuntimeState = new RuntimeState(),
    access?: AccessLog,
    fleet?: FleetStore,
    acme?: CertificateFeed,
    probe = true,
    services: GenerationServices = {},
  ): Promise<Generation> {
    const gen = new Generation(id, config)
    const stapler = services.stapler
    gen.#stapler = stapler
    const counters = state.instruments
    // Every part is built even after one failed, so one BuildError names every problem, each at its config path.
    const problems: BuildProblem[] = []
    try {
      for (const [name, upstreamConfig] of Object.entries(config.upstreams)) {
        let registry = registries?.get(name)
        if (registries && !registry) {
          registry = new HealthRegistry()
          registries.set(name, registry)
        }
        registry?.retain(upstreamConfig.backends.map((b) => addressKey(b.address)))
        try {
          const upstream = new Upstream(name, upstreamConfig, {
            log,
            healthRegistry: registry,
            previous: previous?.upstreams.get(name),
            stats: counters.upstream(name),
            metrics: config.metrics.enabled,
            probe,
          })
          gen.upstreams.set(name, upstream)
        } catch (err) {
          problems.push(...problemsOf(err, upstreamPath(name, upstreamConfig, err)))
        }
      }
      const accessLog = config.access_log.enabled ? access : undefined
      // metrics.enabled false: no route meters, no connect histograms, no labelled handshake series, no census.
      const metrics = config.metrics.enabled
      const censusWindow = metrics ? config.metrics.census_window : 0
      for (const [index, listener] of config.listeners.entries()) {
        const key = addressKey(listener.address)
        if (listener.redirect_https !== undefined) {
          // http-01 (RFC 8555 §8.3) is answered on the plain-HTTP listeners.
          gen.listeners.set(key, new RedirectListener(listener, acme?.http01))
          continue
        }
        // A listener with an acme entry answers tls-alpn-01 and, with on_demand, obtains certificates in handshakes
        // (kept on its first acme entry).
        const firstAcme = listener.tls!.certificates.find((c) => "acme" in c)
        const onDemand = firstAcme && acme?.onDemand
        let certs: CertStore
        const stapling = stapler !== undefined && listener.tls!.ocsp_stapling
        try {
          certs = await CertStore.load(listener.tls!, {
            sourceFor: (entry, dataDir) =>
              certificateSource(entry, dataDir, {
                manager: acme,
                config: config.acme,
                onDemand: onDemand !== undefined && entry === firstAcme,
              }),
            challenges: firstAcme ? acme?.tlsAlpn : undefined,
            onDemand: onDemand ? (name) => onDemand.request(name) : undefined,
            dataDir: config.data_dir,
            engine: listener.engine,
            ticketKeys: state.ticketKeys,
            ticketScope: listener.name,
            onTicketError: (err) =>
              log.warn({ listener: listener.name, err: errorMessage(err) }, "session ticket failed; full handshake"),
            onWatchError: (err, entry) =>
              log.warn(
                { listener: listener.name, entry, err: errorMessage(err) },
                "pushed certificates refused; the old ones stay",
              ),
            onReplaced: (entry, added, removed) => {
              // A renewed certificate gets its own staple before its first handshake (this runs in replace()).
              if (stapling) {
                for (const cert of added) gen.#track(cert)
                for (const cert of removed) gen.#untrack(cert)
              }
              services.onReplaced?.(listener.name, entry)
            },
          })
        } catch (err) {
          problems.push(...problemsOf(err, ["listeners", index, "tls"]))
          continue
        }
        const routes = listener.routes ?? [{ upstream: listener.upstream! }]
        const router = new Router(routes)
        const engineLog = log.child({ listener: listener.name })
        // The table is the runtime's, by address: this generation's limits reach it in applyLimits(), once in service.
        // scope fleet: the table also counts for the fleet, under the listener's name (the same on every instance).
        // A cluster worker's tables count for the process group (services.limiter): scope local means the machine.
        const fleetScope = listener.limits.rate?.scope === "fleet"
        const shared = fleetScope ? fleet : undefined
        const gate = ClientGate.fromConfig(listener.limits, (limits) =>
          state.clientLimiters.get(key, () => {
            const options = { ...limits, counters: counters.clientGate(key) }
            if (services.limiter) return services.limiter(listener.name, fleetScope, options)
            return shared ? shared.limiter(listener.name, options) : new ClientLimiter(options)
          }),
        )
        let engine: Engine =
          listener.engine === "tcp"
            ? new TcpEngine({ listener, router, upstreams: gen.upstreams, log: engineLog, accessLog })
            : new HttpEngine({
                listener,
                router,
                upstreams: gen.upstreams,
                log: engineLog,
                accessLog,
                gate,
                meters: metrics
                  ? router.routes.map((r) => counters.route(listener.name, String(r.index), r.upstream))
                  : undefined,
                generateTrace: config.tracing.generate,
              })
        if (gate) {
          gen.gates.set(key, gate)
          engine = gate.wrap(engine)
        }
        if (stapling) for (const cert of certs.certificates()) gen.#track(cert)
        gen.listeners.set(
          key,
          new TlsListener(listener, certs, engine, engineLog, counters.listener(listener.name), counters.failures, {
            metrics,
            census: censusWindow > 0 ? state.census(listener.name, censusWindow) : undefined,
            censusSample: config.metrics.census_sample,
            staples: stapling ? (cert) => stapler.staple(cert) : undefined,
          }),
        )
      }
      if (problems.length > 0) throw new BuildError(problems)
    } catch (err) {
      gen.destroy()
      throw err
    }
    return gen
  }

  /**
   * check builds a generation from `config` as start would (certificates, contexts, routers, pools, upstream TLS
   * files), binding nothing and starting no health check, then throws it away: `portcullis check` calls it.
   * Resolves with every build problem at its config path; none means the config would start.
   */
  static async check(config: Config, log: Logger): Promise<BuildProblem[]> {
    try {
      const gen = await Generation.build(0, config, log)
      gen.destroy()
      return []
    } catch (err) {
      if (err instanceof BuildError) return [...err.problems]
      return problemsOf(err, [])
    }
  }

  /** start runs each upstream's first round of health checks, so no request goes to a backend known to be down. */
  async start(): Promise<void> {
    await Promise.all([...this.upstreams.values()].map((u) => u.start()))
  }

  /** applyLimits puts this generation's per-client limits on the runtime's gate tables (when it takes over). */
  applyLimits(): void {
    for (const gate of this.gates.values()) gate.apply()
  }

  /** drain stops new requests to a backend (in-flight ones finish), or puts it back in service. */
  drainBackend(upstream: string, backend: string, on: boolean): void {
    const u = this.upstreams.get(upstream)
    if (!u?.setDraining(backend, on)) {
      throw new PortcullisError("PC_ADMIN_NOT_FOUND", `no backend ${backend} in upstream ${upstream}`)
    }
  }

  /** handlerFor returns the accept function for a bound address. */
  handlerFor(key: string): (socket: net.Socket) => void {
    const listener = this.listeners.get(key)!
    return (socket) => listener.accept(socket)
  }

  /** close finishes in-flight work within graceMs, then closes backend pools. */
  async close(graceMs: number, closeIdle = true): Promise<void> {
    this.#stopCertificateWatches()
    await Promise.allSettled([...this.listeners.values()].map((l) => l.close(graceMs, closeIdle)))
    await Promise.allSettled([...this.upstreams.values()].map((u) => u.close()))
    for (const gate of this.gates.values()) gate.close()
  }

  /** stopHealthChecks ends active checks when a newer generation takes over (its checkers own the records now). */
  stopHealthChecks(): void {
    for (const u of this.upstreams.values()) void u.health?.close()
  }

  /** A generation on its way out takes no more certificates its sources push, and keeps no more staples. */
  #stopCertificateWatches(): void {
    for (const l of this.listeners.values()) if (l instanceof TlsListener) l.certs.close()
    for (const cert of this.#stapled.splice(0)) this.#stapler?.release(cert)
  }

  #track(cert: LoadedCertificate): void {
    if (this.#stapler?.track(cert, this.config.data_dir)) this.#stapled.push(cert)
  }

  #untrack(cert: LoadedCertificate): void {
    const i = this.#stapled.indexOf(cert)
    if (i < 0) return
    this.#stapled.splice(i, 1)
    this.#stapler?.release(cert)
  }

  destroy(): void {
    this.#stopCertificateWatches()
    for (const gate of this.gates.values()) gate.close()
    for (const l of this.listeners.values()) l.destroy()
    for (const u of this.upstreams.values()) void u.destroy()
  }

  /** census: GET /tls/clients, each TLS listener's ClientHello census by name (listeners without one left out). */
  census(): { listeners: Record<string, ListenerCensus> } {
    const listeners: Record<string, ListenerCensus> = {}
    for (const l of this.listeners.values()) {
      if (!(l instanceof TlsListener)) continue
      const census = l.census()
      if (census !== undefined) listeners[l.config.name] = census
    }
    return { listeners }
  }

  status() {
    const clients: Record<string, unknown> = {}
    for (const [key, gate] of this.gates) clients[key] = gate.status()
    return {
      generation: this.id,
      clients,
      loaded_at: this.createdAt.toISOString(),
      listeners: [...this.listeners.values()].map((l) => l.status()),
      upstreams: [...this.upstreams.values()].map((u) => u.status()),
    }
  }
}

/**
 * ReloadStep is more work a reload must do with the listeners, all or nothing (main.ts moves the admin API with it):
 * prepare runs after the new listener sockets are bound and before the swap; if it throws, the reload is refused
 * and rollback undoes whatever prepare got done. commit runs once the new generation is live.
 */
export interface ReloadStep {
  prepare(): Promise<void>
  rollback(): Promise<void>
  commit(): void
}

/**
 * upstreamPath is where an upstream's build failure belongs: a file read under `tls` names its key (ca, cert, key)
 * by the path of the failed read; anything else is the upstream's.
 */
function upstreamPath(name: string, config: UpstreamConfig, err: unknown): ConfigPath {
  const cause = err instanceof Error ? err.cause : undefined
  const file = cause && typeof cause === "object" && "path" in cause ? cause.path : undefined
  const tls = config.tls
  for (const key of ["ca", "cert", "key"] as const) {
    if (tls && file !== undefined && tls[key] === file) return ["upstreams", name, "tls", key]
  }
  return ["upstreams", name]
}

/** acmeKey identifies a config's ACME manager: one is kept across reloads while its section and data_dir stay. */
export function acmeKey(config: Config): string {
  return JSON.stringify([config.acme, config.data_dir])
}

/**
 * createAcmeManager makes the manager of a config's acme section: its storage is the fleet's Redis storage with
 * cluster.store (so one instance orders a name and the others load its result), else files under data_dir.
 * `extra`: a cluster primary's relay and certificate push.
 */
export function createAcmeManager(
  config: Config,
  log: Logger,
  state: RuntimeState,
  fleet: FleetStore | undefined,
  extra: Pick<AcmeManagerOptions, "relay" | "onCertificate">,
): AcmeManager {
  return new AcmeManager(config.acme!, {
    storage: selectCertificateStorage(config.data_dir, fleet?.certificateStorage),
    ...(fleet && { watchMs: fleet.certificatePollMs }),
    log: log.child({ component: "acme" }),
    counters: state.instruments.acme(),
    ...extra,
  })
}

function closingError(): PortcullisError {
  return new PortcullisError("PC_RUNTIME_CLOSING", "closed while the config was being applied: not started")
}

/**
 * Runtime owns the bound sockets (keyed by address, kept across reloads), the current generation, and the state
 * every generation is handed: health records, and the RuntimeState (counters, client gate tables, ticket keys).
 */
export class Runtime {
  readonly #log: Logger
  readonly #state: RuntimeState
  readonly #sockets = new Map<string, ListenerSocket>()
  #current: Generation | undefined
  #nextId = 1
  #draining = new Set<Generation>()
  /** Active health records by upstream name: they outlive generations, so a reload keeps every backend's state. */
  readonly #health = new Map<string, HealthRegistry>()
  #reloading: Promise<void> | undefined
  /** Where access lines go (one writer for every generation; each config says its path); none: not written. */
  readonly #accessLog: AccessLog | undefined
  readonly #fleet: FleetStore | undefined
  readonly #listen: ListenSource | undefined
  readonly #probe: boolean
  readonly #rotation: TicketRotation
  #closing = false
  readonly #stapler: OcspStapler
  readonly #selfCheckMs: number | undefined
  readonly #limiter: LimiterSource | undefined
  /** The ACME manager of the running config's acme section (with the data_dir), kept while that stays the same. */
  #acme: { key: string; manager: CertificateFeed } | undefined
  readonly #acmeFeed: RuntimeOptions["acmeFeed"]

  /**
   * With a fleet store, pass its ring in `state` (RuntimeState({ ticketKeys: fleet.ring })) and the store in
   * options: listeners with `limits.rate.scope: fleet` count through it.
   */
  constructor(log: Logger, state: RuntimeState = new RuntimeState(), options: RuntimeOptions = {}) {
    this.#log = log
    this.#state = state
    this.#accessLog = options.accessLog
    this.#fleet = options.fleet
    this.#listen = options.listen
    this.#probe = options.probe ?? true
    this.#limiter = options.limiter
    this.#acmeFeed = options.acmeFeed
    const count = (name: string, event: CertificateEvent) => state.instruments.certificateEvent(name, event)
    this.#stapler = new OcspStapler({ ...options.ocsp, log, count })
    this.#selfCheckMs =
      options.selfCheck === false || options.selfCheck === undefined ? undefined : options.selfCheck.timeoutMs
    // Contexts read the ring in the handshake (tls/ticket-callback.ts): a rotation, here or by the fleet, needs no
    // rebuild. The serving config's `session_tickets` schedules the ring's rotation.
    this.#rotation = new TicketRotation(state.ticketKeys, log)
  }

  /** ready is true while a generation serves and the runtime is not shutting down (GET /readyz). */
  get ready(): boolean {
    return this.#current !== undefined && !this.#closing
  }

  /** state is what outlives generations: the metrics registry, the ticket key ring, the client gate tables. */
  get state(): RuntimeState {
    return this.#state
  }

  /** reopenAccessLog opens the access log file again at its path (SIGUSR1, after logrotate renamed it). */
  reopenAccessLog(): void {
    this.#accessLog?.reopen()
  }

  get generation(): Generation | undefined {
    return this.#current
  }

  /** drainingGenerations counts the replaced generations still finishing their connections (GET /metrics). */
  get drainingGenerations(): number {
    return this.#draining.size
  }

  /** start builds the first generation and binds its listeners. */
  async start(config: Config): Promise<void> {
    await this.#apply(config)
  }

  /**
   * reload builds a new generation in full, binds any new addresses (and runs step.prepare), then swaps; if anything
   * fails the running generation stays, every new address is closed again, and the error is thrown. The old
   * generation finishes its connections in the background.
   */
  async reload(config: Config, step?: ReloadStep): Promise<void> {
    while (this.#reloading) await this.#reloading.catch(() => {})
    const run = this.#apply(config, step)
    this.#reloading = run
    try {
      await run
    } finally {
      this.#reloading = undefined
    }
  }

  /** acmeFor gives the manager for a config's acme section: the running one if it is unchanged, else a new one. */
  #acmeFor(config: Config): { key: string; manager: CertificateFeed } | undefined {
    if (!config.acme) return undefined
    const key = acmeKey(config)
    if (this.#acme?.key === key) return this.#acme
    const manager = this.#acmeFeed?.(config) ?? createAcmeManager(config, this.#log, this.#state, this.#fleet, {})
    return { key, manager }
  }

  /** acme is the running ACME manager (tests read its managed certificates); a cluster worker has none. */
  get acme(): AcmeManager | undefined {
    const manager = this.#acme?.manager
    return manager instanceof AcmeManager ? manager : undefined
  }

  async #apply(config: Config, step?: ReloadStep): Promise<void> {
    const access = this.#accessLog
    const acme = this.#acmeFor(config)
    // A new feed only when the section changed and the factory gave another object (a worker's stays the same).
    const newAcme = acme !== undefined && acme.manager !== this.#acme?.manager
    let gen: Generation
    try {
      gen = await Generation.build(
        this.#nextId,
        config,
        this.#log,
        this.#health,
        this.#current,
        this.#state,
        access,
        this.#fleet,
        acme?.manager,
        this.#probe,
        {
          stapler: this.#stapler,
          limiter: this.#limiter,
          onReplaced: (listener, entry) => {
            // Only the serving generation's swaps are checked (a retiring one's store is closed, it takes none).
            if (this.#current === gen) this.#selfCheck(gen, listener, entry)
          },
        },
      )
    } catch (err) {
      if (newAcme) acme.manager.close()
      throw err
    }
    const added: ListenerSocket[] = []
    let prepared = false
    const previousPath = access?.path
    try {
      // Opened before anything is bound, so a path that cannot be opened refuses the config.
      if (config.access_log.enabled) access?.use(config.access_log.path)
      await gen.start()
      for (const key of gen.listeners.keys()) {
        if (this.#sockets.has(key)) continue
        const listener = config.listeners.find((l) => addressKey(l.address) === key)!
        const socket = new ListenerSocket(listener.address, gen.handlerFor(key), this.#state.instruments.socket(key))
        added.push(socket)
        await socket.start(await this.#listen?.(key, listener.address))
        // close() came while this one started (a worker told to stop while it starts): it must not serve.
        if (this.#closing) throw closingError()
      }
      if (this.#closing) throw closingError()
      prepared = step !== undefined
      await step?.prepare()
    } catch (err) {
      gen.destroy()
      if (newAcme) acme.manager.close()
      await Promise.allSettled([...added.map((s) => s.close()), ...(prepared ? [step!.rollback()] : [])])
      try {
        access?.use(previousPath)
      } catch {
        // The old file is gone too: lines go to the new one (the running config stays otherwise).
      }
      throw err
    }
    this.#nextId++
    for (const s of added) this.#sockets.set(s.key, s)
    for (const [key, socket] of this.#sockets) {
      if (gen.listeners.has(key)) {
        socket.handler = gen.handlerFor(key)
        socket.maxConnections = config.listeners.find((l) => addressKey(l.address) === key)!.limits.max_connections
      } else {
        this.#sockets.delete(key)
        void socket.close()
      }
    }
    gen.applyLimits()
    this.#state.clientLimiters.retain(gen.gates.keys())
    this.#state.retainCensuses(
      gen.config.metrics.enabled && gen.config.metrics.census_window > 0 ? gen.config.listeners.map((l) => l.name) : [],
    )
    const old = this.#current
    this.#current = gen
    if (acme !== this.#acme) {
      if (this.#acme && this.#acme.manager !== acme?.manager) this.#acme.manager.close()
      this.#acme = acme
    }
    step?.commit()
    this.#log.info({ generation: gen.id, listeners: [...gen.listeners.keys()] }, old ? "reloaded" : "started")
    if (old) this.#retire(old)
    // The old generation stopped watching its sources in #retire: certificates only it served stop renewing.
    if (old && !newAcme) acme?.manager.prune()
    this.#selfCheck(gen)
    this.#rotation.apply(ringSchedule(config.listeners.flatMap((l) => (l.tls ? [l.tls] : []))))
  }

  #retire(old: Generation): void {
    old.stopHealthChecks()
    this.#draining.add(old)
    old
      .close(this.#current?.config.shutdown_grace ?? 30_000, false)
      .catch((err: unknown) => this.#log.error({ err }, "closing an old generation"))
      .finally(() => this.#draining.delete(old))
  }

  /** healthRegistry is the active health records of an upstream (by name), made on first use: a worker sets them. */
  healthRegistry(upstream: string): HealthRegistry {
    let registry = this.#health.get(upstream)
    if (!registry) {
      registry = new HealthRegistry()
      this.#health.set(upstream, registry)
    }
    return registry
  }

  /** listenFds maps each bound address to its socket's file descriptor (a successor process inherits them). */
  listenFds(): Map<string, number> {
    const out = new Map<string, number>()
    for (const [key, s] of this.#sockets) if (s.fd >= 0) out.set(key, s.fd)
    return out
  }

  /** ocspStatus is a certificate's OCSP state as the runtime's stapler knows it ("none": no staple kept). */
  ocspStatus(cert: LoadedCertificate) {
    return this.#stapler.status(cert)
  }

  /**
   * selfCheck handshakes with the generation's listeners (one listener's entry after an in-place swap; else every
   * entry) for each certificate name, in the background and one handshake at a time, and reports what was served.
   */
  #selfCheck(gen: Generation, only?: string, entry?: number): void {
    const timeoutMs = this.#selfCheckMs
    if (timeoutMs === undefined) return
    const run = async () => {
      for (const [key, l] of gen.listeners) {
        if (!(l instanceof TlsListener) || (only !== undefined && l.config.name !== only)) continue
        const socket = this.#sockets.get(key)
        // A listener that reads a PROXY header first would refuse (or misread) a bare handshake.
        if (!socket || l.config.proxy_protocol === "accept") continue
        const target = { host: loopbackFor(l.config.address.host), port: socket.port, timeoutMs }
        const entries = l.certs.entries()
        for (const [i, certs] of entries.entries()) {
          if (entry !== undefined && i !== entry) continue
          for (const cert of certs) {
            if (this.#closing || this.#current !== gen) return
            for (const r of await checkServedCertificate(cert, target)) {
              const fields = { listener: l.config.name, entry: i, certificate: cert.names[0], sni: r.servername }
              const name = cert.names[0] ?? ""
              if (r.ok) {
                this.#state.instruments.certificateEvent(name, "self_check_ok")
                this.#log.debug(fields, "self-check: the intended certificate is served")
              } else if (r.served) {
                this.#state.instruments.certificateEvent(name, "self_check_mismatch")
                this.#log.error(
                  { ...fields, expected: r.expected, served: r.served, served_names: r.servedNames },
                  "self-check: another certificate is served for this name (shadowed by another entry, or something else answers on the address)",
                )
              } else {
                this.#state.instruments.certificateEvent(name, "self_check_failed")
                this.#log.warn({ ...fields, err: r.error }, "self-check: no handshake with our own listener")
              }
            }
          }
        }
      }
    }
    run().catch((err: unknown) => this.#log.warn({ err: errorMessage(err) }, "self-check"))
  }

  /** ports maps listener names to their bound ports (tests bind port 0). */
  ports(): Record<string, number> {
    const out: Record<string, number> = {}
    const gen = this.#current
    if (!gen) return out
    for (const l of gen.config.listeners) {
      const socket = this.#sockets.get(addressKey(l.address))
      if (socket) out[l.name] = socket.port
    }
    return out
  }

  /**
   * close stops accepting, lets in-flight requests finish within graceMs, then closes everything. handover: another
   * process accepts on the same sockets now (a rolling restart, a takeover): idle keep-alive connections are not
   * cut (that races with a client's next request) but end after their next response, as on a reload.
   */
  async close(graceMs?: number, options: { handover?: boolean } = {}): Promise<void> {
    this.#closing = true
    this.#rotation.close()
    const grace = graceMs ?? this.#current?.config.shutdown_grace ?? 30_000
    await Promise.allSettled([...this.#sockets.values()].map((s) => s.close()))
    this.#sockets.clear()
    const gens = [...this.#draining, ...(this.#current ? [this.#current] : [])]
    this.#current = undefined
    await Promise.allSettled(gens.map((g) => g.close(grace, !options.handover)))
    this.#acme?.manager.close()
    this.#acme = undefined
    this.#state.close()
    this.#stapler.close()
    // Every line of every request that finished is written before close resolves (and the process exits).
    await this.#accessLog?.close()
  }

  /** drain sets a backend of the current generation draining (no new requests; in-flight ones finish) or back. */
  drain(upstream: string, backend: string, on: boolean): void {
    if (!this.#current) throw new PortcullisError("PC_NOT_RUNNING", "not running")
    this.#current.drainBackend(upstream, backend, on)
    this.#log.info({ upstream, backend, draining: on }, on ? "backend draining" : "backend back in service")
  }

  status() {
    if (!this.#current) throw new PortcullisError("PC_NOT_RUNNING", "not running")
    const sockets: Record<string, { connections: number; refused: number }> = {}
    for (const [key, s] of this.#sockets) sockets[key] = { connections: s.connections, refused: s.refused }
    return {
      ...this.#current.status(),
      draining: [...this.#draining].map((g) => g.id),
      ports: this.ports(),
      sockets,
    }
  }
}
