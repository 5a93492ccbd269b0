/**
 * @module gen-config-reference: writes docs/config-reference.md from the zod schema in src/config/schema.ts, one row
 * per key path with its type, default and description. `--check` exits 1 when the file is out of date.
 */
import { readFileSync, writeFileSync } from "node:fs"
import { dirname, resolve } from "node:path"
import { fileURLToPath } from "node:url"
import { configSchema } from "../src/config/schema.ts"

/** SchemaNode is the part of zod 4's introspection the generator reads: `_zod.def` and `.description`. */
interface SchemaNode {
  description?: string
  _zod: { def: SchemaDef }
  safeParse?: (value: unknown) => { success: boolean; data?: unknown }
}

type SchemaDef = Record<string, unknown> & { type: string }

/** Row is one key path of the reference. */
export interface Row {
  path: string
  type: string
  default: string
  description: string
}

/** Wrapper is what unwrapping a key's schema learned on the way in. */
interface Unwrapped {
  node: SchemaNode
  description: string
  default: unknown
  hasDefault: boolean
  optional: boolean
  nullable: boolean
  /** What a z.preprocess in front accepts besides the shape, found by probing ("\"host:port\""). */
  shorthand: string | undefined
}

const MAX_DEPTH = 30
const MAX_PATTERN = 70

/** unwrap looks through default/prefault/optional/nullable/readonly/catch/lazy wrappers, keeping what they say. */
function unwrap(start: SchemaNode): Unwrapped {
  const out: Unwrapped = {
    node: start,
    description: "",
    default: undefined,
    hasDefault: false,
    optional: false,
    nullable: false,
    shorthand: undefined,
  }
  let node = start
  for (let i = 0; i < MAX_DEPTH; i++) {
    if (!out.description && node.description) out.description = node.description
    const def = node._zod.def
    switch (def.type) {
      case "default":
      case "prefault":
        if (!out.hasDefault) {
          out.hasDefault = true
          out.default = def["defaultValue"]
        }
        node = def["innerType"] as SchemaNode
        continue
      case "optional":
        out.optional = true
        node = def["innerType"] as SchemaNode
        continue
      case "nullable":
        out.nullable = true
        node = def["innerType"] as SchemaNode
        continue
      case "readonly":
      case "catch":
      case "nonoptional":
        node = def["innerType"] as SchemaNode
        continue
      case "lazy":
        node = (def["getter"] as () => SchemaNode)()
        continue
      case "pipe": {
        // z.preprocess(fn, schema) is pipe(transform, schema): the schema after it is the shape users write.
        const input = def["in"] as SchemaNode
        if (input._zod.def.type === "transform") {
          out.shorthand ??= PROBES.find(([sample]) => node.safeParse?.(sample)?.success)?.[2]
          node = def["out"] as SchemaNode
          continue
        }
        break
      }
    }
    break
  }
  out.node = node
  return out
}

/** The values a custom transform is probed with to name it: durations, sizes and addresses read as strings. */
const PROBES: [string, unknown, string][] = [
  ["1m30s", 90_000, "duration"],
  ["64KiB", 65_536, "size"],
  ["127.0.0.1:8080", { host: "127.0.0.1", port: 8080 }, '"host:port"'],
]

/** transformName names a pipe into a transform by what it does to sample input ("duration", "size", ...). */
function transformName(node: SchemaNode): string | undefined {
  for (const [input, output, name] of PROBES) {
    const result = node.safeParse?.(input)
    if (result?.success && JSON.stringify(result.data) === JSON.stringify(output)) return name
  }
  return undefined
}

/** numberRange renders the bounds a number schema checks, e.g. "1–65535" or "≥ 0". */
function numberRange(def: SchemaDef): string {
  let low: string | undefined
  let high: string | undefined
  // For integers, "> 0" reads better as "≥ 1".
  const step = isInteger(def) ? 1 : 0
  for (const check of (def["checks"] as { _zod: { def: Record<string, unknown> } }[] | undefined) ?? []) {
    const c = check._zod.def
    const value = Number(c["value"])
    if (c["check"] === "greater_than") low = c["inclusive"] ? `${value}` : step ? `${value + step}` : `> ${value}`
    if (c["check"] === "less_than") high = c["inclusive"] ? `${value}` : step ? `${value - step}` : `< ${value}`
  }
  if (low !== undefined && high !== undefined && !low.startsWith(">") && !high.startsWith("<")) return `${low}–${high}`
  const parts = [low === undefined ? "" : low.startsWith(">") ? low : `≥ ${low}`, high ?? ""]
  if (high !== undefined && !high.startsWith("<")) parts[1] = `≤ ${high}`
  return parts.filter(Boolean).join(", ")
}

function isInteger(def: SchemaDef): boolean {
  const checks = (def["checks"] as { _zod: { def: Record<string, unknown> } }[] | undefined) ?? []
  return checks.some((c) => c._zod.def["check"] === "number_format" && /int/.test(String(c._zod.def["format"])))
}

/** typeName renders the type of an unwrapped schema for the Type column. */
function typeName(node: SchemaNode, depth = 0): string {
  if (depth > MAX_DEPTH) return "…"
  const def = node._zod.def
  switch (def.type) {
    case "string": {
      const checks = (def["checks"] as { _zod: { def: Record<string, unknown> } }[] | undefined) ?? []
      const prefix = checks.find((c) => c._zod.def["format"] === "starts_with")?._zod.def["prefix"]
      if (prefix !== undefined) return `string starting with "${String(prefix)}"`
      const pattern = checks.find((c) => c._zod.def["format"] === "regex")?._zod.def["pattern"]
      // Short patterns say what is allowed better than words would; long ones (host names) only get in the way.
      if (pattern instanceof RegExp && pattern.source.length <= MAX_PATTERN)
        return `string matching \`${pattern.source}\``
      return "string"
    }
    case "number": {
      const range = numberRange(def)
      return `${isInteger(def) ? "integer" : "number"}${range ? ` ${range}` : ""}`
    }
    case "boolean":
      return "boolean"
    case "enum":
      return Object.values(def["entries"] as Record<string, string | number>)
        .map((v) => `\`${v}\``)
        .join(" | ")
    case "literal":
      return (def["values"] as unknown[]).map((v) => `\`${String(v)}\``).join(" | ")
    case "array":
      return `list of ${plural(fullType(unwrap(def["element"] as SchemaNode), depth + 1))}`
    case "object":
    case "intersection":
      return "mapping"
    case "record":
      return `mapping of name → ${fullType(unwrap(def["valueType"] as SchemaNode), depth + 1)}`
    case "union": {
      const names = (def["options"] as SchemaNode[]).map((o) => fullType(unwrap(o), depth + 1))
      return [...new Set(names)].join(" or ")
    }
    case "pipe": {
      const named = transformName(node)
      if (named) return named
      const input = def["in"] as SchemaNode
      return typeName(unwrap(input).node, depth + 1)
    }
    default:
      return def.type
  }
}

/** fullType is typeName plus what a preprocess shorthand or nullable adds. */
function fullType(u: Unwrapped, depth = 0): string {
  const type = typeName(u.node, depth)
  return `${u.shorthand ? `${u.shorthand} or ` : ""}${type}${u.nullable ? " or null" : ""}`
}

/** plural turns "mapping" into "mappings" for "list of ..." (enums and compound types stay as they are). */
function plural(type: string): string {
  return type
    .split(" or ")
    .map((part) => (/^(mapping|string|integer|number|boolean)$/.test(part) ? `${part}s` : part))
    .join(" or ")
}

/** formatDefault renders a default value the way it would be written in the YAML file. */
function formatDefault(u: Unwrapped): string {
  if (u.hasDefault) {
    const value = u.default
    if (typeof value === "string") return `\`${value}\``
    if (Array.isArray(value)) return value.length === 0 ? "`[]`" : `\`[${value.join(", ")}]\``
    if (value !== null && typeof value === "object") {
      return Object.keys(value).length === 0 ? "`{}`" : `\`${JSON.stringify(value)}\``
    }
    return `\`${String(value)}\``
  }
  return u.optional || u.nullable ? "—" : "**required**"
}

/** objectShapes lists the mappings a schema holds: one for an object, one per branch for a union of objects. */
function objectShapes(node: SchemaNode, depth = 0): Record<string, SchemaNode>[] {
  if (depth > MAX_DEPTH) return []
  const def = node._zod.def
  if (def.type === "object") return [def["shape"] as Record<string, SchemaNode>]
  if (def.type === "intersection") {
    // Both sides apply at once: one mapping with the keys of each.
    const sides = [def["left"], def["right"]].flatMap((side) =>
      objectShapes(unwrap(side as SchemaNode).node, depth + 1),
    )
    return [Object.assign({}, ...sides) as Record<string, SchemaNode>]
  }
  if (def.type === "union") {
    return (def["options"] as SchemaNode[]).flatMap((o) => objectShapes(unwrap(o).node, depth + 1))
  }
  return []
}

/** children finds the keys below a schema and the path segment that leads to them ("[]" for lists, ".<name>" for maps). */
function children(node: SchemaNode, path: string, rows: Row[], depth: number): void {
  if (depth > MAX_DEPTH) return
  const def = node._zod.def
  if (def.type === "array") {
    children(unwrap(def["element"] as SchemaNode).node, `${path}[]`, rows, depth + 1)
    return
  }
  if (def.type === "record") {
    children(unwrap(def["valueType"] as SchemaNode).node, `${path}.<name>`, rows, depth + 1)
    return
  }
  const seen = new Map<string, string | undefined>()
  const shapes = objectShapes(node)
  for (const shape of shapes) {
    // In a union of mappings each mapping is one form; its first key names it ("the `cert` form").
    const form = shapes.length > 1 ? Object.keys(shape)[0] : undefined
    for (const [key, child] of Object.entries(shape)) {
      // A key two forms share is listed once, unless it means something else in a later form (key_type).
      const description = (child as { description?: string }).description
      if (seen.has(key) && seen.get(key) === description) continue
      seen.set(key, description)
      walk(child, path ? `${path}.${key}` : key, rows, depth + 1, form)
    }
  }
}

/** walk adds the row for one key and then the rows for the keys below it. */
function walk(schema: SchemaNode, path: string, rows: Row[], depth: number, form?: string): void {
  const u = unwrap(schema)
  let value = formatDefault(u)
  if (form !== undefined) value = `${value === "**required**" ? value : `${value},`} in the \`${form}\` form`
  rows.push({ path, type: fullType(u), default: value, description: tidyDescription(u) })
  children(u.node, path, rows, depth)
}

/** tidyDescription drops what the Default column already says: a trailing "(required)" or "(default <same>)". */
function tidyDescription(u: Unwrapped): string {
  let text = u.description.trim()
  if (!u.hasDefault && !u.optional) text = text.replace(/\s*\(required\)$/, "")
  if (u.hasDefault) {
    const shown = formatDefault(u).replaceAll("`", "")
    const match = /\s*\(default ([^()]*)\)$/.exec(text)
    if (match && match[1]!.replace(/^"|"$/g, "") === shown) text = text.slice(0, match.index)
  }
  return text
}

/** configRows lists every key path of a config schema, in schema order. */
export function configRows(schema: unknown = configSchema): Row[] {
  const rows: Row[] = []
  children(unwrap(schema as SchemaNode).node, "", rows, 0)
  return rows
}

function cell(text: string): string {
  return text.replaceAll("\\", "\\\\").replaceAll("|", "\\|").replaceAll("\n", " ")
}

/** typeCell escapes a Type column entry, keeping the backticks of enum values and escaping their separators. */
function typeCell(text: string): string {
  return text.replaceAll("|", "\\|").replaceAll("\n", " ")
}

/** renderConfigReference renders the Markdown reference for a config schema. */
export function renderConfigReference(schema: unknown = configSchema): string {
  const rows = configRows(schema)
  const lines = [
    "# Config reference",
    "",
    "<!-- Generated by scripts/gen-config-reference.ts from src/config/schema.ts. Do not edit by hand: run",
    "     `node scripts/gen-config-reference.ts` after changing the schema. test/config/reference.test.ts checks it. -->",
    "",
    "Every key Portcullis reads from its YAML config file. Unknown keys are errors. `[]` marks an item of a list and",
    "`<name>` a name you choose (an upstream's name). Durations are written like `30s`, `250ms` or `1m30s` (a bare",
    'number is milliseconds); sizes like `64KiB`, `1MiB` or `16384` (bytes); addresses as `"host:port"`, with',
    'brackets for IPv6 (`"[::]:8443"`). Relative file paths resolve against the folder of the config file.',
  ]
  const sections = new Map<string, Row[]>()
  for (const row of rows) {
    const top = row.path.split(/[.[]/)[0]!
    const list = sections.get(top) ?? []
    list.push(row)
    sections.set(top, list)
  }
  for (const [top, list] of sections) {
    lines.push("", `## ${top}`, "", "| Key | Type | Default | Description |", "| --- | --- | --- | --- |")
    for (const row of list) {
      lines.push(`| \`${row.path}\` | ${typeCell(row.type)} | ${cell(row.default)} | ${cell(row.description)} |`)
    }
  }
  return `${lines.join("\n")}\n`
}

/** REFERENCE_FILE is where the generated reference lives. */
export const REFERENCE_FILE = resolve(dirname(fileURLToPath(import.meta.url)), "../docs/config-reference.md")

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const text = renderConfigReference()
  if (process.argv.includes("--check")) {
    let current = ""
    try {
      current = readFileSync(REFERENCE_FILE, "utf8")
    } catch {
      // A missing file is out of date too.
    }
    if (current !== text) {
      console.error(`${REFERENCE_FILE} is out of date: run node scripts/gen-config-reference.ts`)
      process.exit(1)
    }
  } else {
    writeFileSync(REFERENCE_FILE, text)
    console.log(`wrote ${REFERENCE_FILE} (${configRows().length} keys)`)
  }
}
