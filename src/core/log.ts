/** @module log: the pino logger with redaction of keys and credentials (access lines are core/access-log.ts's). */
import { type Logger, pino } from "pino"

export type { Logger } from "pino"

/** Paths pino replaces with "[redacted]" wherever they appear in a log object. */
const REDACT = [
  "key",
  "*.key",
  "*.*.key",
  "privateKey",
  "*.privateKey",
  "passphrase",
  "*.passphrase",
  "authorization",
  "*.authorization",
  "headers.authorization",
  'headers["proxy-authorization"]',
  "headers.cookie",
  // pino's request convention nests headers one level down: { req: { headers } }
  "*.headers.authorization",
  '*.headers["proxy-authorization"]',
  "*.headers.cookie",
]

/** createLogger makes the process logger; level from PORTCULLIS_LOG_LEVEL (default info), JSON lines to stdout. */
export function createLogger(options: { level?: string; destination?: NodeJS.WritableStream } = {}): Logger {
  const level = options.level ?? process.env["PORTCULLIS_LOG_LEVEL"] ?? "info"
  const opts = { level, base: { pid: process.pid }, redact: { paths: REDACT, censor: "[redacted]" } }
  return options.destination ? pino(opts, options.destination) : pino(opts)
}

/** silentLogger is for tests and `check`, where logging would only be noise. */
export function silentLogger(): Logger {
  return pino({ level: "silent" })
}
