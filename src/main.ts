#!/usr/bin/env node
/** @module main: the CLI: `portcullis [--config FILE]` · `check --config FILE` · `certs [--config FILE]` · `reload`. */
// First: V8's settings must be in force before the other modules allocate (v8-flags.ts says which and why).
import "./core/v8-flags.ts"
import { readFileSync } from "node:fs"
import { availableParallelism } from "node:os"
import { join } from "node:path"
import { parseArgs } from "node:util"
import { AdminApi } from "./admin/api.ts"
import { expiring, renderCertificateTable, WARN_DAYS_DEFAULT } from "./admin/certificate-table.ts"
import { certificateList, certificatesOfConfig } from "./admin/certificates.ts"
import { dashboardData, runtimeDashboardSource } from "./admin/dashboard/data.ts"
import { scrape } from "./admin/metrics-endpoint.ts"
import { InheritedFds } from "./cluster/inherited-fds.ts"
import { fromWire, wireKeys } from "./cluster/ipc-ticket-ring.ts"
import { Primary } from "./cluster/primary.ts"
import { FleetStore } from "./cluster/shared/fleet-store.ts"
import { announceReady, receiveState, spawnSuccessor } from "./cluster/takeover.ts"
import { runWorker } from "./cluster/worker.ts"
import { defaultConfig } from "./config/default.ts"
import { inspectConfigFile, type LoadedConfig, loadConfigFile, locateBuildError, sortProblems } from "./config/load.ts"
import { type Config, type HostPort, parseHostPort } from "./config/schema.ts"
import { AccessLog } from "./core/access-log.ts"
import {
  ConfigError,
  type ConfigProblem,
  errorCode,
  errorMessage,
  formatProblem,
  PortcullisError,
} from "./core/errors.ts"
import { createLogger, type Logger, silentLogger } from "./core/log.ts"
import { PrettyStream } from "./core/pretty-log.ts"
import { type DemoBackend, startDemoBackend } from "./demo/backend.ts"
import { Generation, Runtime } from "./runtime.ts"
import { RuntimeState } from "./state/runtime-state.ts"
import { MemoryTicketKeyRing } from "./state/ticket-keys.ts"
import { checkCertificates } from "./tls/check-certificates.ts"

const USAGE = `usage:
  portcullis [--config FILE] [--log-format json|pretty]
                                      run (no file: the embedded default on https://localhost:8443);
                                      logs are JSON lines unless pretty (or PORTCULLIS_LOG_FORMAT=pretty)
  portcullis check --config FILE      validate config and certificates without binding; exit 0 or 1
  portcullis certs [--config FILE] [--json] [--warn-days N]
                                      list the certificates in use: names, key, issuer, expiry, source, next
                                      renewal, OCSP status; exit 1 if one expires within N days (default 14)
  portcullis reload [--config FILE | --admin HOST:PORT]   ask a running instance to reload
  portcullis restart [--config FILE | --admin HOST:PORT]  replace the workers one by one (also SIGUSR2)
  portcullis upgrade [--config FILE | --admin HOST:PORT]  start the program anew on the listening sockets and hand
                                      over to it (a new version takes over without refusing a connection)`

/** VERSION is package.json's, for the fleet's instance list (src/ and dist/ both sit beside package.json). */
const VERSION = readVersion()

function readVersion(): string {
  try {
    return String(JSON.parse(readFileSync(join(import.meta.dirname, "../package.json"), "utf8")).version)
  } catch {
    return "unknown"
  }
}

async function main(argv: string[]): Promise<number> {
  const command = argv[0] && !argv[0].startsWith("-") ? argv[0] : "run"
  const rest = command === "run" ? argv : argv.slice(1)
  const { values } = parseArgs({
    args: rest,
    options: {
      config: { type: "string", short: "c" },
      admin: { type: "string" },
      "log-format": { type: "string" },
      json: { type: "boolean" },
      "warn-days": { type: "string" },
      help: { type: "boolean", short: "h" },
    },
    strict: true,
  })
  if (values.help) {
    console.log(USAGE)
    return 0
  }
  switch (command) {
    case "run": {
      const format = values["log-format"] ?? process.env["PORTCULLIS_LOG_FORMAT"] ?? "json"
      if (format !== "json" && format !== "pretty") {
        console.error(`--log-format takes json or pretty, not "${format}"`)
        return 2
      }
      return run(values.config, format)
    }
    case "check":
      return check(values.config)
    case "certs": {
      const warnDays = values["warn-days"] === undefined ? WARN_DAYS_DEFAULT : Number(values["warn-days"])
      if (!Number.isFinite(warnDays) || warnDays < 0) {
        console.error(`--warn-days takes a number of days, not "${values["warn-days"]}"`)
        return 2
      }
      return certs(values.config, values.json ?? false, warnDays)
    }
    case "reload":
    case "restart":
    case "upgrade":
      return ask(command, values.config, values.admin)
    case "worker":
      return runWorker()
    default:
      console.error(`unknown command "${command}"\n${USAGE}`)
      return 2
  }
}

/** workerCount is cluster.workers resolved: auto is one per core; absent is 1 (one process, no workers). */
export function workerCount(config: Config): number {
  const w = config.cluster?.workers
  if (w === undefined) return 1
  return w === "auto" ? availableParallelism() : w
}

/**
 * run starts Portcullis and keeps it running until SIGTERM/SIGINT; SIGHUP reloads the config file, SIGUSR2
 * restarts the workers. With cluster.workers >= 2 this process is the primary and workers carry the traffic.
 */
async function run(file: string | undefined, format: "json" | "pretty"): Promise<number> {
  const log = format === "pretty" ? createLogger({ destination: new PrettyStream() }) : createLogger()
  // A SIGTERM or SIGINT before the start is done (systemd stopping a unit that is still coming up, a Ctrl-C at once):
  // Node's default would end this process on the spot, a primary without telling its workers or the fleet store.
  // It is kept and acted on once the start is done, as a stop then would be; a second one ends the process now.
  let signalWhileStarting: NodeJS.Signals | undefined
  const onSignalWhileStarting = (signal: NodeJS.Signals) => {
    if (signalWhileStarting) {
      log.warn(`${signal} again while starting: exiting now`)
      process.exit(1)
    }
    signalWhileStarting = signal
    log.info(`${signal} while starting: stopping once the start is done`)
  }
  process.on("SIGTERM", onSignalWhileStarting)
  process.on("SIGINT", onSignalWhileStarting)
  let demo: DemoBackend | undefined
  let config: Config
  let loaded: LoadedConfig | undefined
  if (file) {
    loaded = await loadComplete(file)
    config = loaded.config
  } else {
    demo = await startDemoBackend()
    config = defaultConfig(demo.port, process.cwd())
  }
  // Sockets handed over by the process this one replaces (portcullis upgrade), by listen key.
  const inherited = InheritedFds.fromEnv()
  const workers = workerCount(config)
  const accessLog = new AccessLog({ onError: (err) => log.warn({ code: errorCode(err) }, err.message) })
  // cluster.store: the ring and the instance list live in Redis; read once at start (a reload does not change it).
  const store = config.cluster?.store
  let stopping = false
  let runtime: Runtime | Primary | undefined
  const fleet =
    store &&
    new FleetStore({
      store,
      log,
      version: VERSION,
      self: () => ({
        addresses: Object.fromEntries(
          (runtime?.generation?.config.listeners ?? []).map((l) => [
            l.name,
            `${l.address.host}:${runtime?.ports()[l.name] ?? l.address.port}`,
          ]),
        ),
        status: stopping ? "draining" : runtime?.ready ? "serving" : "starting",
      }),
    })
  await fleet?.start()
  // Taken over without a fleet store: the predecessor's ring (over the takeover channel), so its sessions resume.
  const handed = inherited.claimed && !fleet ? await receiveState() : undefined
  const state = fleet
    ? new RuntimeState({ ticketKeys: fleet.ring })
    : new RuntimeState(
        handed?.keys?.length ? { ticketKeys: new MemoryTicketKeyRing({ keys: handed.keys.map(fromWire) }) } : {},
      )
  runtime =
    workers >= 2
      ? new Primary({ workers, script: process.argv[1]!, log, state, fleet, inherited })
      : new Runtime(log, state, {
          accessLog,
          fleet,
          listen: async (key) => {
            const fd = inherited.take(key)
            return fd === undefined ? undefined : { fd }
          },
          // The self-check handshakes with our own listeners after every start, reload and in-place swap (issue 11).
          selfCheck: { timeoutMs: 3000 },
        })
  const running = runtime
  try {
    await running.start(config)
  } catch (err) {
    await fleet?.close()
    throw loaded ? locateBuildError(err, loaded.locate) : err
  }
  let admin: AdminApi | undefined
  /** The admin section the running API was built from (its token file and TLS files). */
  let adminConfig: Config["admin"]
  const reloadFromFile = async () => {
    try {
      await reloadOnce()
      running.state.instruments.reload(true)
    } catch (err) {
      running.state.instruments.reload(false)
      throw err
    }
  }
  const reloadOnce = async () => {
    if (!file)
      throw new PortcullisError("PC_RELOAD_NO_FILE", "running the embedded default: there is no config file to reload")
    // The admin API outlives the listeners through the shutdown grace (for GET /readyz): no reload then.
    if (stopping) throw new PortcullisError("PC_RELOAD_STOPPING", "shutting down: no reload")
    const loadedNext = await loadComplete(file)
    const next = loadedNext.config
    if (JSON.stringify(next.cluster?.store) !== JSON.stringify(store)) {
      log.warn("cluster.store changed: it is read at start only; restart to use the new one")
    }
    // The admin API moves with the reload, all or nothing: the new address is bound before the swap, and the old
    // one closes (after answering the POST /reload that asked) only once the new generation is live.
    const wantAdmin = next.admin
    const want = wantAdmin?.address
    // Same address, token file and TLS files: the running API stays (else it moves, as a new one).
    const same =
      admin !== undefined &&
      want !== undefined &&
      sameAddress(admin.address, want) &&
      sameSecurity(adminConfig, wantAdmin)
    let moved: AdminApi | undefined
    try {
      await running.reload(next, {
        prepare: async () => {
          if (same || !want) return
          moved = new AdminApi(want, actions, log, wantAdmin)
          await moved.start()
        },
        rollback: async () => {
          await moved?.close()
        },
        commit: () => {
          if (same) return
          admin?.retire()
          admin = moved
          adminConfig = wantAdmin
        },
      })
    } catch (err) {
      throw locateBuildError(err, loadedNext.locate)
    }
  }
  let handingOver: Promise<unknown> | undefined
  /** upgrade starts the program anew on our listening sockets; once it serves, this process drains and exits. */
  const upgrade = async () => {
    if (stopping) throw new PortcullisError("PC_UPGRADE_STOPPING", "shutting down: no upgrade")
    if (handingOver) throw new PortcullisError("PC_UPGRADE_BUSY", "an upgrade is in progress")
    const fds = new Map(running.listenFds())
    if (admin && admin.fd >= 0) fds.set("admin", admin.fd)
    log.info({ listeners: [...fds.keys()] }, "upgrade: starting the new process on the listening sockets")
    // The ring goes to the successor over the channel only (a fleet store's ring is Redis's: nothing to hand over).
    const pending = spawnSuccessor(fds, () => ({ keys: fleet ? undefined : wireKeys(running.state.ticketKeys) }))
    handingOver = pending
    let pid: number
    try {
      pid = await pending
    } catch (err) {
      handingOver = undefined
      throw err
    }
    log.info({ successor: pid }, "upgrade: the new process serves; this one stops accepting and drains")
    // After the answer to POST /upgrade is on its way.
    setImmediate(() => stopNow("upgrade"))
    return { pid: process.pid, successor: pid }
  }
  let stopNow: (why: string) => void = () => {}
  // One process: its own snapshot. A primary asks its workers and adds their snapshots up (aggregate-dashboard.ts).
  const dashboardSource =
    running instanceof Primary ? undefined : runtimeDashboardSource(running, fleet && (() => fleet.status()))
  const actions = {
    status: async () => ({
      pid: process.pid,
      config: file ?? "<embedded default>",
      ...(running instanceof Primary ? await running.status() : running.status()),
      ...(fleet && { instances: fleet.status() }),
    }),
    ready: () => running.ready && !stopping,
    reload: reloadFromFile,
    drain: (upstream: string, backend: string, on: boolean) => running.drain(upstream, backend, on),
    // metrics.enabled false: the families are not counted, so the scrape is refused rather than served stale.
    metrics: () =>
      running.generation?.config.metrics.enabled === false
        ? undefined
        : running instanceof Primary
          ? running.metrics()
          : scrape(running),
    // With workers each answer is theirs, merged by the primary, and says which workers it holds (cluster/primary.ts).
    certificates: () =>
      running instanceof Primary
        ? running.certificates()
        : certificateList(running.generation, (c) => running.ocspStatus(c)),
    failures: () =>
      running instanceof Primary ? running.failures() : { failures: running.state.instruments.failures.recent() },
    clients: () =>
      running instanceof Primary ? running.census() : (running.generation?.census() ?? { listeners: {} }),
    // One process has no workers to replace: a restart is then the takeover (a new process on the same sockets).
    restart: () => (running instanceof Primary ? running.restart() : upgrade()),
    upgrade,
    dashboard: () =>
      dashboardSource ? dashboardData(dashboardSource) : (running as Primary).dashboard(fleet?.status() ?? null),
  }
  if (config.admin) {
    admin = new AdminApi(config.admin.address, actions, log, config.admin)
    adminConfig = config.admin
    await admin.start(inherited.take("admin"))
  }
  logBanner(log, running)
  log.info(
    {
      ports: running.ports(),
      admin: admin ? `${admin.address.host}:${admin.port}` : undefined,
      ...(running instanceof Primary && { workers }),
    },
    "portcullis is running",
  )
  if (inherited.claimed) announceReady()

  // logrotate: rename the file, then SIGUSR1; new lines go to a new file at access_log.path.
  process.on("SIGUSR1", () => {
    try {
      running.reopenAccessLog()
    } catch (err) {
      log.error({ code: errorCode(err) }, `SIGUSR1: ${errorMessage(err)}; lines go to the old file`)
    }
  })
  process.on("SIGHUP", () => {
    log.info("SIGHUP: reloading the config")
    reloadFromFile().catch((err: unknown) => logReloadError(log, err))
  })
  process.on("SIGUSR2", () => {
    log.info("SIGUSR2: restarting")
    actions.restart().catch((err: unknown) => log.error({ err: errorMessage(err) }, "restart refused"))
  })
  return new Promise((resolve) => {
    stopNow = (why) => {
      if (stopping) return
      stopping = true
      log.info({ grace_ms: config.shutdown_grace }, `${why}: handed over; draining in-flight requests`)
      // The successor answers on the admin address now: this API goes at once, the traffic drains in the grace.
      admin?.retire()
      Promise.allSettled([running.close(undefined, { handover: true }), demo?.close()])
        .then(() => Promise.allSettled([admin?.close(), fleet?.close()]))
        .then(
          () => resolve(0),
          () => resolve(1),
        )
    }
    const stop = (signal: string) => {
      if (stopping) {
        log.warn(`${signal} again: exiting now`)
        resolve(1)
        return
      }
      stopping = true
      log.info({ grace_ms: config.shutdown_grace }, `${signal}: stopping; in-flight requests get the grace period`)
      // The admin API stays up through the grace period, so GET /readyz answers 503 until the end.
      Promise.allSettled([running.close(), demo?.close()])
        .then(() => Promise.allSettled([admin?.close(), fleet?.close()]))
        .then(
          () => resolve(0),
          () => resolve(1),
        )
    }
    process.on("SIGTERM", () => stop("SIGTERM"))
    process.on("SIGINT", () => stop("SIGINT"))
    process.off("SIGTERM", onSignalWhileStarting)
    process.off("SIGINT", onSignalWhileStarting)
    if (signalWhileStarting) stop(signalWhileStarting)
  })
}

function sameAddress(a: HostPort, b: HostPort): boolean {
  return a.host === b.host && a.port === b.port
}

/** sameSecurity: the admin API's token file and TLS files are unchanged (then it need not be rebuilt). */
function sameSecurity(a: Config["admin"], b: Config["admin"]): boolean {
  return a?.token_file === b?.token_file && JSON.stringify(a?.tls) === JSON.stringify(b?.tls)
}

/** logBanner says what is live: each listener, its certificates (names, days left) and each upstream. */
function logBanner(log: Logger, runtime: Pick<Runtime | Primary, "generation" | "ports">): void {
  const gen = runtime.generation
  if (!gen) return
  const ports = runtime.ports()
  for (const l of gen.config.listeners) {
    const address = `${l.address.host}:${ports[l.name] ?? l.address.port}`
    if (l.redirect_https !== undefined) {
      log.info({ listener: l.name, address, redirect_https: l.redirect_https }, "listener live")
      continue
    }
    log.info({ listener: l.name, address, engine: l.engine }, "listener live")
  }
  for (const c of certificateList(gen).certificates) {
    log.info(
      { listener: c.listener, names: c.names.join(","), key_type: c.key_type, days_left: c.days_left },
      "certificate live",
    )
  }
  for (const [name, u] of gen.upstreams) {
    const backends = u.status().backends
    log.info(
      {
        upstream: name,
        backends: backends.map((b) => b.id).join(","),
        up: backends.filter((b) => b.state === "up").length,
      },
      "upstream live",
    )
  }
}

function logReloadError(log: Logger, err: unknown): void {
  const problems = err instanceof ConfigError ? err.message.split("\n") : [errorMessage(err)]
  log.error({ problems }, "reload refused; the running config stays")
}

/**
 * loadComplete loads a config file for start and reload; when it is invalid, the ConfigError lists what the schema
 * found together with what building its valid parts found (unreadable files, policies), as `check` does.
 */
async function loadComplete(file: string): Promise<LoadedConfig> {
  const inspection = inspectConfigFile(file)
  if (inspection.loaded) return inspection.loaded
  const problems = [...inspection.problems]
  if (inspection.partial) {
    for (const p of await Generation.check(inspection.partial, silentLogger())) {
      problems.push(inspection.locate(inspection.fromPartial(p.path), p.message))
    }
  }
  throw new ConfigError(sortProblems(problems), inspection.cause === undefined ? {} : { cause: inspection.cause })
}

/**
 * check validates the config without binding anything: the schema and its cross checks, then the real build
 * (Generation.check: certificates, contexts, routers, pools, upstream TLS files) of what is valid, then the
 * certificates' own checks (expiry, chain order, route hosts covered). Every problem is printed, each at its
 * file:line:col, in one run.
 */
async function check(file: string | undefined): Promise<number> {
  if (!file) {
    console.error("check needs --config FILE")
    return 2
  }
  const inspection = inspectConfigFile(file)
  const { locate, fromPartial } = inspection
  const errors: ConfigProblem[] = [...inspection.problems]
  const warnings: ConfigProblem[] = []
  const config = inspection.loaded?.config ?? inspection.partial
  let certificates = 0
  if (config) {
    const built = await Generation.check(config, silentLogger())
    const builtAt = new Set<string>()
    for (const p of built) {
      const path = fromPartial(p.path)
      builtAt.add(JSON.stringify(path))
      errors.push(locate(path, p.message))
    }
    const report = await checkCertificates(config)
    certificates = report.certificates.length
    for (const finding of report.findings) {
      const path = fromPartial(finding.path)
      // A file the build could not load is reported once, by the build.
      if (finding.severity === "error" && builtAt.has(JSON.stringify(path))) continue
      ;(finding.severity === "error" ? errors : warnings).push(locate(path, finding.message))
    }
  }
  for (const w of sortProblems(warnings)) console.error(`warning: ${formatProblem(w)}`)
  for (const e of sortProblems(errors)) console.error(formatProblem(e))
  if (errors.length > 0) {
    console.error(`${file}: ${errors.length} error(s), ${warnings.length} warning(s)`)
    return 1
  }
  console.log(
    `${file}: ok (${config!.listeners.length} listener(s), ${Object.keys(config!.upstreams).length} upstream(s), ${certificates} certificate(s), ${warnings.length} warning(s))`,
  )
  return 0
}

/**
 * certs lists every certificate the config uses (loaded as a start would, binding nothing), with its source's next
 * renewal and the OCSP state the running instance keeps under data_dir. Exit 1 when one expires within `warnDays`
 * days or does not load, else 0.
 */
async function certs(file: string | undefined, json: boolean, warnDays: number): Promise<number> {
  let config: Config
  try {
    config = file ? loadConfigFile(file).config : defaultConfig(1, process.cwd())
  } catch (err) {
    console.error(errorMessage(err))
    return 1
  }
  const now = Date.now()
  const { certificates, errors } = await certificatesOfConfig(config, now)
  const soon = certificates.filter((c) => expiring(c, warnDays, now))
  if (json) {
    console.log(
      JSON.stringify({ warn_days: warnDays, certificates, expiring: soon.map((c) => c.names), errors }, null, 2),
    )
  } else {
    console.log(renderCertificateTable(certificates, warnDays, now))
    for (const c of soon) {
      console.error(`warning: ${c.names.join(",")} (${c.listener}) expires in ${c.days_left} days (${c.not_after})`)
    }
  }
  for (const e of errors) console.error(`error: ${e}`)
  return errors.length > 0 || soon.length > 0 ? 1 : 0
}

/** ask asks a running instance, through its admin API, to reload its config file, restart or upgrade. */
async function ask(
  command: "reload" | "restart" | "upgrade",
  file: string | undefined,
  adminAddress: string | undefined,
): Promise<number> {
  let address = adminAddress ? parseHostPort(adminAddress) : undefined
  const adminConfig = file ? loadConfigFile(file).config.admin : undefined
  if (!address) address = adminConfig?.address
  address ??= { host: "127.0.0.1", port: 9901 }
  const host = address.host.includes(":") ? `[${address.host}]` : address.host
  // The config's admin.token_file, when it sets one, is the bearer token the API asks for.
  const headers: Record<string, string> = {}
  if (adminConfig?.token_file)
    headers["authorization"] = `Bearer ${readFileSync(adminConfig.token_file, "utf8").trim()}`
  try {
    const res = await fetch(`http://${host}:${address.port}/${command}`, { method: "POST", headers })
    const body = (await res.json()) as Record<string, unknown> & { error?: string }
    const done = { reload: "reloaded", restart: "restarted", upgrade: "upgraded" }[command]
    if (body[done] === true) {
      console.log(command === "upgrade" ? `upgraded: pid ${body["successor"]} serves` : done)
      return 0
    }
    const stays = command === "reload" ? "the running config stays" : "the running processes stay"
    console.error(`${command} refused; ${stays}:\n${body.error ?? res.status}`)
    return 1
  } catch (err) {
    console.error(`reaching the admin API at ${host}:${address.port}: ${errorMessage((err as Error).cause ?? err)}`)
    return 1
  }
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err: unknown) => {
    console.error(`portcullis: ${errorMessage(err)}`)
    process.exit(1)
  },
)
