/** @module problems: BuildError, every part of a config that failed to build, each at the config path that caused it. */
import { errorCode, errorMessage, PortcullisError } from "../core/errors.ts"

/** ConfigPath is a path into the config as written: ["listeners", 0, "tls", "certificates", 1, "cert"]. */
export type ConfigPath = readonly (string | number)[]

/** BuildProblem is one failure of the build, at the key that caused it; load.ts turns the path into file:line:col. */
export interface BuildProblem {
  path: ConfigPath
  message: string
  /** the failure's own code (PC_TLS_CERT_LOAD, ...) */
  code: string
}

/**
 * BuildError carries every problem one build found (all of them, not just the first). With one problem it keeps that
 * problem's code and message, so callers that match on the code of a single failure still can; with several its
 * code is PC_CONFIG_BUILD and its message lists them, one a line.
 */
export class BuildError extends PortcullisError {
  readonly problems: readonly BuildProblem[]

  constructor(problems: readonly BuildProblem[], options: { cause?: unknown } = {}) {
    const code = problems.length === 1 ? problems[0]!.code : "PC_CONFIG_BUILD"
    super(code, problems.map((p) => p.message).join("\n"), { source: "config", ...options })
    this.name = "BuildError"
    this.problems = problems
  }
}

/** keyOf reads the config key an error names (a source's `key`: "cert", "key", "ca"), if it names one. */
export function keyOf(err: unknown): string | undefined {
  if (err && typeof err === "object" && "configKey" in err && typeof err.configKey === "string") return err.configKey
  return undefined
}

/**
 * problemsOf turns anything a part of the build threw into problems under `at`: a BuildError's problems are moved
 * under it, an error naming its config key (configKey) points at that key, anything else at `at` itself.
 */
export function problemsOf(err: unknown, at: ConfigPath): BuildProblem[] {
  if (err instanceof BuildError) return err.problems.map((p) => ({ ...p, path: [...at, ...p.path] }))
  const key = keyOf(err)
  return [
    { path: key === undefined ? at : [...at, ...key.split(".")], message: errorMessage(err), code: errorCode(err) },
  ]
}
