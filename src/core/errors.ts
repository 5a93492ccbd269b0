/** @module errors: every error Portcullis throws, each with a stable `code` callers match on. */

/** Where a runtime error came from; respond-error.ts maps it to a status. */
export type ErrorSource = "client" | "backend" | "internal" | "config"

/** PortcullisError is the base of every error we throw: a stable `code`, a source and an optional cause. */
export class PortcullisError extends Error {
  readonly code: string
  readonly source: ErrorSource

  constructor(code: string, message: string, options: { source?: ErrorSource; cause?: unknown } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause })
    this.name = "PortcullisError"
    this.code = code
    this.source = options.source ?? "internal"
  }
}

/** One problem found in a config file, with its position. */
export interface ConfigProblem {
  file: string
  line: number
  column: number
  path: string
  message: string
}

/** formatProblem renders `file:line:col path: message`, the form STYLE.md shows. */
export function formatProblem(p: ConfigProblem): string {
  const where = p.line > 0 ? `${p.file}:${p.line}:${p.column}` : p.file
  return p.path ? `${where} ${p.path}: ${p.message}` : `${where}: ${p.message}`
}

/** ConfigError carries every problem found in one config file (all at once, not just the first). */
export class ConfigError extends PortcullisError {
  readonly problems: readonly ConfigProblem[]

  constructor(problems: readonly ConfigProblem[], options: { cause?: unknown } = {}) {
    super("PC_CONFIG_INVALID", problems.map(formatProblem).join("\n"), { source: "config", ...options })
    this.name = "ConfigError"
    this.problems = problems
  }
}

/** TlsError: a certificate or key could not be loaded or does not fit. */
export class TlsError extends PortcullisError {
  constructor(code: string, message: string, options: { cause?: unknown } = {}) {
    super(code, message, { source: "config", ...options })
    this.name = "TlsError"
  }
}

/** BackendError: the backend refused, reset, timed out or sent something we cannot forward. */
export class BackendError extends PortcullisError {
  constructor(code: string, message: string, options: { cause?: unknown } = {}) {
    super(code, message, { source: "backend", ...options })
    this.name = "BackendError"
  }
}

/** ClientError: the client sent something malformed, too large or too slow. */
export class ClientError extends PortcullisError {
  constructor(code: string, message: string, options: { cause?: unknown } = {}) {
    super(code, message, { source: "client", ...options })
    this.name = "ClientError"
  }
}

/** errorCode reads a code from anything thrown: ours, Node's (ECONNREFUSED) or undici's (UND_ERR_*). */
export function errorCode(err: unknown): string {
  if (err && typeof err === "object" && "code" in err && typeof err.code === "string") return err.code
  return "UNKNOWN"
}

/** errorMessage gives a one-line message for anything thrown. */
export function errorMessage(err: unknown): string {
  if (err instanceof Error) return err.message
  return String(err)
}
