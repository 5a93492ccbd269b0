#!/usr/bin/env node
/** @module main: the CLI: `portcullis [--config FILE]` · `check --config FILE` · `certs [--config FILE]` · `reload`. */
import { parseArgs } from "node:util"
import { AdminApi } from "./admin/api.ts"
import { defaultConfig } from "./config/default.ts"
import { loadConfigFile } from "./config/load.ts"
import { type Config, parseHostPort } from "./config/schema.ts"
import { AccessLog } from "./core/access-log.ts"
import { ConfigError, errorCode, errorMessage, PortcullisError } from "./core/errors.ts"
import { createLogger, type Logger } from "./core/log.ts"
import { type DemoBackend, startDemoBackend } from "./demo/backend.ts"
import { Runtime } from "./runtime.ts"
import { checkCertificates } from "./tls/check-certificates.ts"

const USAGE = `usage:
  portcullis [--config FILE]          run (no file: the embedded default on https://localhost:8443)
  portcullis check --config FILE      validate config and certificates without binding; exit 0 or 1
  portcullis certs [--config FILE]    list the certificates in use with their expiry
  portcullis reload [--config FILE | --admin HOST:PORT]   ask a running instance to reload`

async function main(argv: string[]): Promise<number> {
  const command = argv[0] && !argv[0].startsWith("-") ? argv[0] : "run"
  const rest = command === "run" ? argv : argv.slice(1)
  const { values } = parseArgs({
    args: rest,
    options: {
      config: { type: "string", short: "c" },
      admin: { type: "string" },
      help: { type: "boolean", short: "h" },
    },
    strict: true,
  })
  if (values.help) {
    console.log(USAGE)
    return 0
  }
  switch (command) {
    case "run":
      return run(values.config)
    case "check":
      return check(values.config)
    case "certs":
      return certs(values.config)
    case "reload":
      return reload(values.config, values.admin)
    default:
      console.error(`unknown command "${command}"\n${USAGE}`)
      return 2
  }
}

/** run starts Portcullis and keeps it running until SIGTERM/SIGINT; SIGHUP reloads the config file. */
async function run(file: string | undefined): Promise<number> {
  const log = createLogger()
  let demo: DemoBackend | undefined
  let config: Config
  if (file) config = loadConfigFile(file).config
  else {
    demo = await startDemoBackend()
    config = defaultConfig(demo.port, process.cwd())
  }
  const accessLog = new AccessLog({ onError: (err) => log.warn({ code: errorCode(err) }, err.message) })
  const runtime = new Runtime(log, undefined, { accessLog })
  await runtime.start(config)
  const reloadFromFile = async () => {
    if (!file)
      throw new PortcullisError("PC_RELOAD_NO_FILE", "running the embedded default: there is no config file to reload")
    const next = loadConfigFile(file).config
    await runtime.reload(next)
    await restartAdmin(next)
  }
  let admin: AdminApi | undefined
  const actions = {
    status: () => ({ pid: process.pid, config: file ?? "<embedded default>", ...runtime.status() }),
    reload: reloadFromFile,
    drain: (upstream: string, backend: string, on: boolean) => runtime.drain(upstream, backend, on),
  }
  const restartAdmin = async (next: Config) => {
    const want = next.admin?.address
    if (admin && want && admin.address.host === want.host && admin.address.port === want.port) return
    await admin?.close()
    admin = undefined
    if (want) {
      admin = new AdminApi(want, actions, log)
      await admin.start()
    }
  }
  await restartAdmin(config)
  log.info(
    { ports: runtime.ports(), admin: admin ? `${admin.address.host}:${admin.port}` : undefined },
    "portcullis is running",
  )

  // logrotate: rename the file, then SIGUSR1; new lines go to a new file at access_log.path.
  process.on("SIGUSR1", () => {
    try {
      runtime.reopenAccessLog()
    } catch (err) {
      log.error({ code: errorCode(err) }, `SIGUSR1: ${errorMessage(err)}; lines go to the old file`)
    }
  })
  process.on("SIGHUP", () => {
    log.info("SIGHUP: reloading the config")
    reloadFromFile().catch((err: unknown) => logReloadError(log, err))
  })
  return new Promise((resolve) => {
    let stopping = false
    const stop = (signal: string) => {
      if (stopping) {
        log.warn(`${signal} again: exiting now`)
        resolve(1)
        return
      }
      stopping = true
      log.info({ grace_ms: config.shutdown_grace }, `${signal}: stopping; in-flight requests get the grace period`)
      Promise.allSettled([runtime.close(), admin?.close(), demo?.close()]).then(
        () => resolve(0),
        () => resolve(1),
      )
    }
    process.on("SIGTERM", () => stop("SIGTERM"))
    process.on("SIGINT", () => stop("SIGINT"))
  })
}

function logReloadError(log: Logger, err: unknown): void {
  const problems = err instanceof ConfigError ? err.message.split("\n") : [errorMessage(err)]
  log.error({ problems }, "reload refused; the running config stays")
}

/** check validates the config and its certificates without binding anything. */
async function check(file: string | undefined): Promise<number> {
  if (!file) {
    console.error("check needs --config FILE")
    return 2
  }
  let config: Config
  try {
    config = loadConfigFile(file).config
  } catch (err) {
    console.error(errorMessage(err))
    return 1
  }
  const report = await checkCertificates(config)
  for (const w of report.warnings) console.error(`warning: ${w}`)
  for (const e of report.errors) console.error(`error: ${e}`)
  if (report.errors.length > 0) {
    console.error(`${file}: ${report.errors.length} error(s), ${report.warnings.length} warning(s)`)
    return 1
  }
  console.log(
    `${file}: ok (${config.listeners.length} listener(s), ${Object.keys(config.upstreams).length} upstream(s), ${report.certificates.length} certificate(s), ${report.warnings.length} warning(s))`,
  )
  return 0
}

/** certs lists the certificates the config uses, with names and expiry. */
async function certs(file: string | undefined): Promise<number> {
  let config: Config
  try {
    config = file ? loadConfigFile(file).config : defaultConfig(1, process.cwd())
  } catch (err) {
    console.error(errorMessage(err))
    return 1
  }
  const report = await checkCertificates(config)
  for (const c of report.certificates) {
    const days = Math.floor((new Date(c.notAfter).getTime() - Date.now()) / 86_400_000)
    console.log(
      `${c.names.join(",")}\t${c.keyType}\texpires ${new Date(c.notAfter).toISOString()} (${days} days)\t${c.source}`,
    )
  }
  for (const e of report.errors) console.error(`error: ${e}`)
  return report.errors.length > 0 ? 1 : 0
}

/** reload asks a running instance, through its admin API, to re-read its config file. */
async function reload(file: string | undefined, adminAddress: string | undefined): Promise<number> {
  let address = adminAddress ? parseHostPort(adminAddress) : undefined
  if (!address && file) address = loadConfigFile(file).config.admin?.address
  address ??= { host: "127.0.0.1", port: 9901 }
  const host = address.host.includes(":") ? `[${address.host}]` : address.host
  try {
    const res = await fetch(`http://${host}:${address.port}/reload`, { method: "POST" })
    const body = (await res.json()) as { reloaded: boolean; error?: string }
    if (body.reloaded) {
      console.log("reloaded")
      return 0
    }
    console.error(`reload refused; the running config stays:\n${body.error ?? res.status}`)
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
