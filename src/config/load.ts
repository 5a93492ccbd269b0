/** @module load: reads a YAML config file, keeps positions, validates it and reports every problem with file:line:col. */
import { readFileSync } from "node:fs"
import { dirname, isAbsolute, resolve } from "node:path"
import { isMap, isScalar, isSeq, LineCounter, type Node, parseDocument } from "yaml"
import type { z } from "zod"
import { ConfigError, type ConfigProblem } from "../core/errors.ts"
import { BuildError, type ConfigPath } from "./problems.ts"
import { type Config, configSchema, crossCheck } from "./schema.ts"

/** Keys of ARCHITECTURE.md's shape that this version does not implement yet: refused with a clear word. */
const NOT_YET: Record<string, string> = {}

/** Keys of a section this version does not implement yet (the section's other keys are). */
const NOT_YET_IN: Record<string, Record<string, string>> = {
  cluster: { workers: "worker processes are not implemented yet; Portcullis runs one process (cluster.store is)" },
}

/** What the common read errors mean, in words an operator can act on. */
const READ_ERRORS: Record<string, string> = {
  ENOENT: "no such file; check the path given to --config",
  EACCES: "permission denied",
  EISDIR: "it is a folder, not a file",
}

/** Locate turns a config path and a message into a problem at that key's place in the file. */
export type Locate = (path: ConfigPath, message: string) => ConfigProblem

/** LoadedConfig is a validated Config plus where it came from, and where each of its keys was written. */
export interface LoadedConfig {
  config: Config
  file: string
  locate: Locate
}

/**
 * Inspection is everything the loader can say about a file without giving up at the first stage: the problems of
 * the YAML, the schema and the cross checks together, and the Config when there were none. When the schema failed,
 * `partial` holds the listeners and upstreams that are valid on their own, so the build can still look at them;
 * `fromPartial` maps a path in the partial config back to the file's (its listeners are a subset).
 */
export interface Inspection {
  file: string
  problems: ConfigProblem[]
  loaded?: LoadedConfig
  partial?: Config
  fromPartial: (path: ConfigPath) => ConfigPath
  locate: Locate
  /** why the file could not be read */
  cause?: unknown
}

/** loadConfigFile reads and validates a config file; throws ConfigError listing every problem. */
export function loadConfigFile(file: string): LoadedConfig {
  const inspection = inspectConfigFile(file)
  if (!inspection.loaded) throw inspectionError(inspection)
  return inspection.loaded
}

/** inspectConfigFile reads a config file and reports every problem of its text and schema; it never throws. */
export function inspectConfigFile(file: string): Inspection {
  const path = resolve(file)
  let text: string
  try {
    text = readFileSync(path, "utf8")
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? "error"
    const why = READ_ERRORS[code]
    const message = `reading the config file: ${code}${why ? ` (${why})` : ""}`
    const problem = { file, line: 0, column: 0, path: "", message }
    return {
      file,
      problems: [problem],
      fromPartial: (p) => p,
      locate: (_, m) => ({ ...problem, message: m }),
      cause: err,
    }
  }
  const inspection = inspectConfig(text, file, dirname(path))
  if (inspection.loaded) inspection.loaded.file = path
  return inspection
}

/** parseConfig validates YAML text; `file` names it in errors, relative paths resolve against `baseDir`. */
export function parseConfig(text: string, file: string, baseDir: string): Config {
  const inspection = inspectConfig(text, file, baseDir)
  if (!inspection.loaded) throw inspectionError(inspection)
  return inspection.loaded.config
}

/** inspectionError is the ConfigError of an inspection's problems (its cause: why the file could not be read). */
function inspectionError(inspection: Inspection): ConfigError {
  const cause = inspection.cause
  return new ConfigError(inspection.problems, cause === undefined ? {} : { cause })
}

/**
 * locateBuildError turns a BuildError into the ConfigError of its problems, each at its key's file:line:col
 * (paths through `fromPartial` when the build ran on a partial config); other errors pass through.
 */
export function locateBuildError(
  err: unknown,
  locate: Locate,
  fromPartial: (path: ConfigPath) => ConfigPath = (p) => p,
): unknown {
  if (!(err instanceof BuildError)) return err
  return new ConfigError(sortProblems(err.problems.map((p) => locate(fromPartial(p.path), p.message))), { cause: err })
}

/** sortProblems orders problems by position, keeping the order of those at one place. */
export function sortProblems(problems: ConfigProblem[]): ConfigProblem[] {
  return problems.sort((a, b) => a.line - b.line || a.column - b.column)
}

/** inspectConfig validates YAML text, collecting every problem of the YAML, the schema and the cross checks. */
export function inspectConfig(text: string, file: string, baseDir: string): Inspection {
  const lineCounter = new LineCounter()
  const doc = parseDocument(text, { lineCounter, prettyErrors: false, uniqueKeys: true })
  const at = (offset: number) => lineCounter.linePos(offset)
  const problems: ConfigProblem[] = []
  const locate: Locate = (path, message) => {
    const where = position(doc.contents, path, at, false)
    return { file, line: where.line, column: where.column, path: formatPath(path.slice(0, where.depth)), message }
  }
  const failed = (): Inspection => ({ file, problems, fromPartial: (p) => p, locate })
  for (const err of doc.errors) {
    const pos = at(err.pos[0])
    if (err.code === "DUPLICATE_KEY") {
      const path = pathAt(doc.contents, err.pos[0])
      const key = path.at(-1)
      problems.push({
        file,
        line: pos.line,
        column: pos.col,
        path: formatPath(path),
        message: `duplicate key${key === undefined ? "" : ` "${key}"`}; a key may appear only once in a mapping`,
      })
      continue
    }
    problems.push({ file, line: pos.line, column: pos.col, path: "", message: `YAML: ${firstLine(err.message)}` })
  }
  if (problems.length > 0) return failed()

  const data: unknown = doc.toJS({ maxAliasCount: 100 })
  if (data === null || data === undefined) {
    const message = "the config file is empty; it needs at least a listeners section (see docs/config-reference.md)"
    problems.push({ file, line: 1, column: 1, path: "", message })
    return failed()
  }
  if (typeof data !== "object" || Array.isArray(data)) {
    const got = describeValue(data)
    const message = `expected a mapping of sections (listeners, upstreams, ...), got ${got}`
    problems.push({ file, line: 1, column: 1, path: "", message })
    return failed()
  }
  const record = data as Record<string, unknown>
  for (const [key, why] of Object.entries(NOT_YET)) {
    if (key in record) {
      const where = position(doc.contents, [key], at, true)
      problems.push({ file, line: where.line, column: where.column, path: key, message: why })
      delete record[key]
    }
  }
  for (const [section, keys] of Object.entries(NOT_YET_IN)) {
    const value = record[section]
    if (value === null || typeof value !== "object" || Array.isArray(value)) continue
    for (const [key, why] of Object.entries(keys)) {
      if (!(key in value)) continue
      const where = position(doc.contents, [section, key], at, true)
      problems.push({ file, line: where.line, column: where.column, path: `${section}.${key}`, message: why })
      delete (value as Record<string, unknown>)[key]
    }
  }

  const result = configSchema.safeParse(record, { reportInput: true })
  if (!result.success) {
    for (const issue of result.error.issues) problems.push(...describeIssue(issue, doc.contents, file, at))
    // The schema's cross checks do not run once a key failed: run them on the values as written.
    const seen = new Set(problems.map((p) => `${p.path}\n${p.message}`))
    for (const cross of crossCheck(record)) {
      const problem = locate(cross.path, cross.message)
      if (!seen.has(`${problem.path}\n${problem.message}`)) problems.push(problem)
    }
  }
  if (problems.length > 0) {
    const { partial, fromPartial } = partialConfig(record, baseDir)
    return { file, problems: sortProblems(problems), partial, fromPartial, locate }
  }
  const config = resolvePaths(result.data!, baseDir)
  return { file, problems, loaded: { config, file, locate }, fromPartial: (p) => p, locate }
}

/** The root keys a partial config takes from the file when they are valid (else their defaults). */
const PARTIAL_ROOT_KEYS = ["data_dir", "access_log", "shutdown_grace"]

/**
 * partialConfig keeps the listeners and upstreams that are valid on their own, for a build that looks for what only
 * the build finds (unreadable files, policies) while the schema reports the rest; undefined when nothing is valid.
 */
function partialConfig(
  record: Record<string, unknown>,
  baseDir: string,
): { partial?: Config; fromPartial: (path: ConfigPath) => ConfigPath } {
  const valid = (path: (string | number)[], value: unknown) => {
    const schema = schemaAt(path) as unknown as z.ZodType | undefined
    const parsed = schema?.safeParse(value)
    return parsed?.success ? parsed.data : undefined
  }
  const original: number[] = []
  const listeners: unknown[] = []
  const rawListeners = Array.isArray(record["listeners"]) ? (record["listeners"] as unknown[]) : []
  for (const [i, raw] of rawListeners.entries()) {
    let listener = valid(["listeners", i], raw)
    // A listener invalid elsewhere (its address, its routes) still has its certificates checked: a stand-in with
    // its tls section (and engine) alone, when those are valid.
    if (listener === undefined && raw && typeof raw === "object" && "tls" in raw) {
      const { tls, engine } = raw as Record<string, unknown>
      // An address of its own, so the build keeps it beside the others (it is never bound).
      const standIn = { name: `-${i}`, address: `127.255.255.254:${65535 - i}`, tls, routes: [] }
      listener = valid(["listeners", i], valid(["listeners", i, "engine"], engine) ? { ...standIn, engine } : standIn)
    }
    if (listener === undefined) continue
    original.push(i)
    listeners.push(listener)
  }
  const upstreams: Record<string, unknown> = {}
  const rawUpstreams = record["upstreams"]
  if (rawUpstreams && typeof rawUpstreams === "object" && !Array.isArray(rawUpstreams)) {
    for (const [name, raw] of Object.entries(rawUpstreams)) {
      const upstream = valid(["upstreams", name], raw)
      if (upstream !== undefined) upstreams[name] = upstream
    }
  }
  const fromPartial = (path: ConfigPath): ConfigPath =>
    path[0] === "listeners" && typeof path[1] === "number" ? ["listeners", original[path[1]]!, ...path.slice(2)] : path
  if (listeners.length === 0 && Object.keys(upstreams).length === 0) return { fromPartial }
  // The root's own keys, valid or default: a redirect listener stands in for the required list, then is replaced.
  const root: Record<string, unknown> = { listeners: [{ name: "-", address: "127.0.0.1:1", redirect_https: 1 }] }
  for (const key of PARTIAL_ROOT_KEYS) if (valid([key], record[key]) !== undefined) root[key] = record[key]
  const base = configSchema.safeParse(root)
  if (!base.success) return { fromPartial }
  const partial = { ...base.data, listeners, upstreams } as Config
  return { partial: resolvePaths(partial, baseDir), fromPartial }
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
    // Several mappings fit the type: the one that knows every key given is what the user meant.
    const keysFit = fitting.filter(
      (branch) => !branch.some((e) => e.code === "unrecognized_keys" && e.path.length === 0),
    )
    if (keysFit.length === 1) return keysFit[0]!.flatMap((e) => describeIssue(e, root, file, at, path))
  }
  if (issue.code === "unrecognized_keys") {
    const known = knownKeysAt(path)
    return issue.keys.map((key) => ({
      file,
      ...lineColumn(position(root, [...path, key], at, true)),
      path: formatPath([...path, key]),
      message: `unknown key "${key}"${suggest(key, known)}`,
    }))
  }
  const where = position(root, path, at, false)
  return [
    {
      file,
      line: where.line,
      column: where.column,
      path: formatPath(path.slice(0, where.depth)),
      message: issueMessage(issue, path),
    },
  ]
}

/** issueMessage says what was found and what is expected, replacing zod's generic wording. */
function issueMessage(issue: z.core.$ZodIssue, path: readonly (string | number)[]): string {
  const got = `got ${describeValue(issue.input)}`
  switch (issue.code) {
    case "invalid_type": {
      if (issue.input === undefined) {
        const key = path.at(-1)
        const about = describeAt(path)
        return `missing required key${key === undefined ? "" : ` "${key}"`}${about ? ` (${about})` : ""}`
      }
      return `expected ${TYPE_WORDS[issue.expected] ?? issue.expected}, ${got}`
    }
    case "invalid_value":
      if (issue.values.length === 1) return `expected ${JSON.stringify(issue.values[0])}, ${got}`
      return `expected one of ${issue.values.map((v) => JSON.stringify(v)).join(", ")}, ${got}`
    case "invalid_union": {
      // { acme: [...] } among the certificates: say it is not built yet rather than "expected ...".
      const input = issue.input
      if (input !== null && typeof input === "object" && !Array.isArray(input)) {
        const later = Object.keys(input).find((key) => key in NOT_YET)
        if (later !== undefined) return NOT_YET[later]!
      }
      // Every branch refused the value's type: name the types that would do.
      const expected = issue.errors.flatMap((branch) =>
        branch.flatMap((e) => (e.code === "invalid_type" && e.path.length === 0 ? [e.expected as string] : [])),
      )
      if (expected.length === issue.errors.length) {
        const words = [...new Set(expected)].map((t) => TYPE_WORDS[t] ?? t)
        return `expected ${words.join(" or ")}, ${got}`
      }
      return issue.message === "Invalid input" ? `this value does not fit here, ${got}` : issue.message
    }
    case "too_small":
    case "too_big": {
      const small = issue.code === "too_small"
      const limit = Number(small ? issue.minimum : issue.maximum)
      const bound = issue.inclusive
        ? `${small ? "at least" : "at most"} ${limit}`
        : `${small ? "more" : "less"} than ${limit}`
      if (issue.origin === "array" || issue.origin === "set") {
        const count = Array.isArray(issue.input) ? issue.input.length : 0
        return `expected ${bound} item${limit === 1 ? "" : "s"}, got ${count === 0 ? "none" : count}`
      }
      if (issue.origin === "string") {
        if (small && limit <= 1) return `expected a non-empty string, ${got}`
        return `expected ${bound} characters, ${got}`
      }
      return `expected ${bound}, ${got}`
    }
    case "invalid_format": {
      if (issue.format === "starts_with" && "prefix" in issue) {
        return `expected a value starting with ${JSON.stringify(issue.prefix)}, ${got}`
      }
      if (issue.message.startsWith("Invalid string")) {
        const pattern = "pattern" in issue && issue.pattern ? ` matching ${issue.pattern}` : ""
        return `expected a value${pattern}, ${got}`
      }
      return withGot(issue.message, got)
    }
    case "invalid_key":
      return `invalid name ${describeValue(issue.input)}: ${issueMessage(issue.issues[0]!, path).replace(/, got .*$/, "")}`
    case "custom":
      // Our own messages (superRefine, transforms) already name what was found.
      return issue.message
    default:
      return withGot(issue.message, got)
  }
}

/** withGot adds what was found to a custom message unless it already says so. */
function withGot(message: string, got: string): string {
  return /\bgot\b/.test(message) || got === "got undefined" ? message : `${message}, ${got}`
}

const TYPE_WORDS: Record<string, string> = {
  string: "a string",
  number: "a number",
  int: "a whole number",
  boolean: "true or false",
  array: "a list",
  object: "a mapping",
  record: "a mapping",
  null: "null",
}

/**
 * describeValue renders a found value briefly: scalars as JSON, collections by kind. PEM text (a key pasted into the
 * config, or a key file given as --config) is never repeated: messages reach terminals, logs and the admin API.
 */
function describeValue(value: unknown): string {
  if (value === undefined) return "nothing"
  if (typeof value === "string" && /-----BEGIN[ A-Z0-9]*-----/.test(value)) return "PEM text (not shown)"
  if (Array.isArray(value)) return "a list"
  if (value !== null && typeof value === "object") return "a mapping"
  return JSON.stringify(value)
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

/** pathAt finds the key path of the map key or item that starts at a source offset (for YAML errors). */
function pathAt(root: Node | null, offset: number): (string | number)[] {
  const path: (string | number)[] = []
  let node: unknown = root
  for (let depth = 0; depth < 100; depth++) {
    if (isMap(node)) {
      const pair = node.items.find((p) => {
        const key = p.key as Node | null
        const value = p.value as Node | null
        const start = key?.range?.[0] ?? value?.range?.[0] ?? -1
        const stop = value?.range?.[2] ?? key?.range?.[2] ?? -1
        return start <= offset && offset < Math.max(stop, start + 1)
      })
      if (!pair) break
      path.push(isScalar(pair.key) ? String(pair.key.value) : "?")
      if ((pair.key as Node | null)?.range?.[0] === offset) break
      node = pair.value
    } else if (isSeq(node)) {
      const index = node.items.findIndex((item) => {
        const range = (item as Node | null)?.range
        return range !== undefined && range !== null && range[0] <= offset && offset < range[2]
      })
      if (index < 0) break
      path.push(index)
      node = node.items[index]
    } else break
  }
  return path
}

function lineColumn(p: { line: number; column: number }) {
  return { line: p.line, column: p.column }
}

/** SchemaNode is the slice of zod 4's introspection the loader reads (`_zod.def`, `description`). */
interface SchemaNode {
  description?: string
  _zod: { def: Record<string, unknown> & { type: string } }
}

/** unwrapSchema looks through default/optional/pipe/preprocess wrappers to the schema that holds the shape. */
function unwrapSchema(node: SchemaNode | undefined): SchemaNode | undefined {
  for (let i = 0; node && i < 20; i++) {
    const def = node._zod.def
    if ("innerType" in def) node = def["innerType"] as SchemaNode
    else if (def.type === "pipe") {
      const input = def["in"] as SchemaNode
      node = input._zod.def.type === "transform" ? (def["out"] as SchemaNode) : input
    } else return node
  }
  return node
}

/** schemaAt finds the (wrapped) schema at a config path, or undefined where the schema has none. */
function schemaAt(path: readonly (string | number)[]): SchemaNode | undefined {
  let node: SchemaNode | undefined = configSchema as unknown as SchemaNode
  for (const segment of path) {
    const inner = unwrapSchema(node)
    if (!inner) return undefined
    const def = inner._zod.def
    if (def.type === "object") node = (def["shape"] as Record<string, SchemaNode>)[String(segment)]
    else if (def.type === "array") node = def["element"] as SchemaNode
    else if (def.type === "record") node = def["valueType"] as SchemaNode
    else if (def.type === "union") {
      // A union of mappings (the certificate kinds): take the first branch that has this key.
      const options = (def["options"] as SchemaNode[]).map(unwrapSchema)
      node = options
        .map((o) => (o?._zod.def.type === "object" ? (o._zod.def["shape"] as Record<string, SchemaNode>) : {}))
        .find((shape) => String(segment) in shape)?.[String(segment)]
    } else return undefined
  }
  return node
}

/** knownKeysAt lists the keys the schema allows at a path (all union branches' keys for a union). */
function knownKeysAt(path: readonly (string | number)[]): string[] {
  const node = unwrapSchema(schemaAt(path))
  if (!node) return []
  const def = node._zod.def
  if (def.type === "object") return Object.keys(def["shape"] as object)
  if (def.type === "union") {
    return (def["options"] as SchemaNode[]).flatMap((o) => {
      const inner = unwrapSchema(o)
      return inner?._zod.def.type === "object" ? Object.keys(inner._zod.def["shape"] as object) : []
    })
  }
  return []
}

/** describeAt gives the schema's description of a key, without the "(required)" note. */
function describeAt(path: readonly (string | number)[]): string {
  let node = schemaAt(path)
  for (let i = 0; node && !node.description && i < 20; i++) {
    const def = node._zod.def
    node = ("innerType" in def ? def["innerType"] : def.type === "pipe" ? def["in"] : undefined) as SchemaNode
  }
  return (node?.description ?? "").replace(/\s*\(required\)$/, "")
}

/** suggest offers the closest known key for a typo ("upstreem" -> "upstream"), else lists the known keys. */
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
  if (best) return `; did you mean "${best}"?`
  return known.length > 0 ? `; known keys: ${known.join(", ")}` : ""
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
    l.tls.certificates = l.tls.certificates.map((c) => ("cert" in c ? { ...c, cert: abs(c.cert), key: abs(c.key) } : c))
    for (const auth of [l.tls.client_auth, ...l.tls.certificates.map((c) => c.client_auth)]) {
      if (!auth) continue
      auth.ca = absOpt(auth.ca)
      auth.crl = absOpt(auth.crl)
    }
  }
  for (const u of Object.values(config.upstreams)) {
    if (!u.tls) continue
    u.tls.ca = absOpt(u.tls.ca)
    u.tls.cert = absOpt(u.tls.cert)
    u.tls.key = absOpt(u.tls.key)
  }
  if (config.admin) {
    if (config.admin.token_file !== undefined) config.admin.token_file = abs(config.admin.token_file)
    const t = config.admin.tls
    if (t) config.admin.tls = { cert: abs(t.cert), key: abs(t.key), client_ca: abs(t.client_ca) }
  }
  if (config.acme) {
    config.acme.ca_bundle = absOpt(config.acme.ca_bundle)
    if (config.acme.eab) config.acme.eab.hmac_key_file = abs(config.acme.eab.hmac_key_file)
  }
  config.data_dir = abs(config.data_dir)
  if (config.access_log.path !== undefined) config.access_log.path = abs(config.access_log.path)
  return config
}
