/** @module load: reads a YAML config file, keeps positions, validates it and reports every problem with file:line:col. */
import { readFileSync } from "node:fs"
import { dirname, isAbsolute, resolve } from "node:path"
import { isMap, isScalar, LineCounter, type Node, parseDocument } from "yaml"
import type { z } from "zod"
import { ConfigError, type ConfigProblem } from "../core/errors.ts"
import { type Config, configSchema } from "./schema.ts"

/** Keys of ARCHITECTURE.md's shape that this version does not implement yet: refused with a clear word. */
const NOT_YET: Record<string, string> = {
  acme: "ACME certificates are not implemented yet; use cert/key files or self_signed",
  cluster: "cluster mode is not implemented yet; Portcullis runs one process",
}

/** LoadedConfig is a validated Config plus where it came from. */
export interface LoadedConfig {
  config: Config
  file: string
}

/** loadConfigFile reads and validates a config file; throws ConfigError listing every problem. */
export function loadConfigFile(file: string): LoadedConfig {
  const path = resolve(file)
  let text: string
  try {
    text = readFileSync(path, "utf8")
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? "error"
    throw new ConfigError([{ file, line: 0, column: 0, path: "", message: `reading the config file: ${code}` }], {
      cause: err,
    })
  }
  return { config: parseConfig(text, file, dirname(path)), file: path }
}

/** parseConfig validates YAML text; `file` names it in errors, relative paths resolve against `baseDir`. */
export function parseConfig(text: string, file: string, baseDir: string): Config {
  const lineCounter = new LineCounter()
  const doc = parseDocument(text, { lineCounter, prettyErrors: false, uniqueKeys: true })
  const at = (offset: number) => lineCounter.linePos(offset)
  const problems: ConfigProblem[] = []
  for (const err of doc.errors) {
    const pos = at(err.pos[0])
    problems.push({ file, line: pos.line, column: pos.col, path: "", message: `YAML: ${firstLine(err.message)}` })
  }
  if (problems.length > 0) throw new ConfigError(problems)

  const data: unknown = doc.toJS({ maxAliasCount: 100 }) ?? {}
  if (typeof data !== "object" || Array.isArray(data)) {
    throw new ConfigError([
      { file, line: 1, column: 1, path: "", message: "expected a mapping of sections (listeners, upstreams, ...)" },
    ])
  }
  const record = data as Record<string, unknown>
  for (const [key, why] of Object.entries(NOT_YET)) {
    if (key in record) {
      const where = position(doc.contents, [key], at, true)
      problems.push({ file, line: where.line, column: where.column, path: key, message: why })
      delete record[key]
    }
  }

  const result = configSchema.safeParse(record)
  if (!result.success) {
    for (const issue of result.error.issues) problems.push(...describeIssue(issue, doc.contents, file, at))
  }
  if (problems.length > 0) {
    problems.sort((a, b) => a.line - b.line || a.column - b.column)
    throw new ConfigError(problems)
  }
  return resolvePaths(result.data!, baseDir)
}

type Position = (offset: number) => { line: number; col: number }

/** describeIssue turns one zod issue into problems, pointing at the offending key for unknown keys. */
function describeIssue(
  issue: z.core.$ZodIssue,
  root: Node | null,
  file: string,
  at: Position,
  prefix: readonly (string | number)[] = [],
): ConfigProblem[] {
  const path = [...prefix, ...issue.path.filter((p): p is string | number => typeof p !== "symbol")]
  if (issue.code === "invalid_union") {
    // Report the branch that matched the value's type ("a string" vs "a mapping"), not "invalid input".
    const fitting = issue.errors.filter(
      (branch) => !branch.some((e) => e.code === "invalid_type" && e.path.length === 0),
    )
    if (fitting.length === 1) return fitting[0]!.flatMap((e) => describeIssue(e, root, file, at, path))
  }
  if (issue.code === "unrecognized_keys") {
    return issue.keys.map((key) => ({
      file,
      ...lineColumn(position(root, [...path, key], at, true)),
      path: formatPath([...path, key]),
      message: `unknown key "${key}"${suggest(key, knownKeysAt(root, path))}`,
    }))
  }
  let message = issue.message
  if (issue.code === "invalid_type" && issue.input === undefined) message = `missing required key`
  else if (issue.code === "invalid_value" && "values" in issue) {
    message = `expected one of ${issue.values.map((v) => JSON.stringify(v)).join(", ")}, got ${JSON.stringify(issue.input)}`
  }
  const where = position(root, path, at, false)
  return [{ file, line: where.line, column: where.column, path: formatPath(path.slice(0, where.depth)), message }]
}

/** position finds the line and column of the deepest node along a path (or of the key itself). */
function position(root: Node | null, path: readonly (string | number)[], at: Position, wantKey: boolean) {
  let node: unknown = root
  let found: { line: number; column: number } = { line: 1, column: 1 }
  let depth = path.length
  const mark = (range: [number, number, number] | null | undefined) => {
    if (range) {
      const pos = at(range[0])
      found = { line: pos.line, column: pos.col }
    }
  }
  mark((root as { range?: [number, number, number] } | null)?.range)
  for (let i = 0; i < path.length; i++) {
    const segment = path[i]!
    const last = i === path.length - 1
    if (isMap(node)) {
      const pair = node.items.find((p) => isScalar(p.key) && String(p.key.value) === String(segment))
      if (!pair) break
      if (last && wantKey && isScalar(pair.key)) {
        mark(pair.key.range)
        break
      }
      node = pair.value
      mark((node as { range?: [number, number, number] } | null)?.range ?? (pair.key as Node).range)
    } else if (node && typeof node === "object" && "items" in node && Array.isArray(node.items)) {
      node = node.items[Number(segment)]
      if (node === undefined) break
      mark((node as { range?: [number, number, number] }).range)
    } else {
      // A scalar where the schema looked deeper ("10.0.0.7" for { address }): name the scalar.
      if (isScalar(node)) depth = i
      break
    }
  }
  return { ...found, depth }
}

function lineColumn(p: { line: number; column: number }) {
  return { line: p.line, column: p.column }
}

function knownKeysAt(root: Node | null, path: readonly (string | number)[]): string[] {
  // The schema's own keys for this spot would be better; the common sections cover most typos.
  void root
  const depth = path.length
  if (depth === 0) return ["listeners", "upstreams", "admin", "access_log", "data_dir", "shutdown_grace"]
  if (path[0] === "listeners" && depth === 2) {
    return [
      "name",
      "address",
      "engine",
      "proxy_protocol",
      "trusted_proxies",
      "tls",
      "routes",
      "upstream",
      "send_proxy_protocol",
      "redirect_https",
      "limits",
    ]
  }
  if (path[0] === "listeners" && path[2] === "tls" && depth === 3) {
    return [
      "certificates",
      "profile",
      "min_version",
      "max_version",
      "ciphers",
      "ciphersuites",
      "groups",
      "alpn",
      "client_auth",
      "handshake_timeout",
      "hsts",
      "session_tickets",
    ]
  }
  if (path[0] === "upstreams" && depth === 2) {
    return [
      "backends",
      "balance",
      "hash_key",
      "health",
      "timeouts",
      "retries",
      "tls",
      "send_proxy_protocol",
      "keepalive",
    ]
  }
  return []
}

/** suggest offers the closest known key for a typo ("upstreem" -> "upstream"). */
function suggest(key: string, known: string[]): string {
  let best = ""
  let bestDistance = 3
  for (const candidate of known) {
    const d = editDistance(key, candidate)
    if (d < bestDistance) {
      best = candidate
      bestDistance = d
    }
  }
  return best ? `; did you mean "${best}"?` : ""
}

function editDistance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, i) => i)
  for (let i = 1; i <= a.length; i++) {
    let prev = row[0]!
    row[0] = i
    for (let j = 1; j <= b.length; j++) {
      const tmp = row[j]!
      row[j] = Math.min(row[j]! + 1, row[j - 1]! + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1))
      prev = tmp
    }
  }
  return row[b.length]!
}

/** formatPath renders ["upstreams","api","backends",1] as upstreams.api.backends[1]. */
export function formatPath(path: readonly (string | number)[]): string {
  let out = ""
  for (const segment of path) {
    if (typeof segment === "number") out += `[${segment}]`
    else out += out ? `.${segment}` : segment
  }
  return out
}

function firstLine(text: string): string {
  return text.split("\n")[0]!.trim()
}

/** resolvePaths makes every file path in the config absolute, relative to the config file's folder. */
function resolvePaths(config: Config, baseDir: string): Config {
  const abs = (p: string) => (isAbsolute(p) ? p : resolve(baseDir, p))
  const absOpt = (p: string | undefined) => (p === undefined ? undefined : abs(p))
  for (const l of config.listeners) {
    if (!l.tls) continue
    l.tls.certificates = l.tls.certificates.map((c) => ("cert" in c ? { cert: abs(c.cert), key: abs(c.key) } : c))
    if (l.tls.client_auth) {
      l.tls.client_auth.ca = absOpt(l.tls.client_auth.ca)
      l.tls.client_auth.crl = absOpt(l.tls.client_auth.crl)
    }
  }
  for (const u of Object.values(config.upstreams)) {
    if (!u.tls) continue
    u.tls.ca = absOpt(u.tls.ca)
    u.tls.cert = absOpt(u.tls.cert)
    u.tls.key = absOpt(u.tls.key)
  }
  config.data_dir = abs(config.data_dir)
  return config
}
