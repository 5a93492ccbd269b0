/**
 * A strict parser of the Prometheus text exposition format 0.0.4, for tests: it throws on any line the format does
 * not allow (bad names, label syntax or escapes, values that are not numbers, samples before their # TYPE, a series
 * given twice, histogram buckets that fall or disagree with _count), so a writer that drifts from the format fails.
 */

export interface Sample {
  name: string
  labels: Record<string, string>
  value: number
}

export interface ParsedFamily {
  name: string
  type: "counter" | "gauge" | "histogram" | "summary" | "untyped"
  help: string | undefined
  samples: Sample[]
}

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/
const TYPES = new Set(["counter", "gauge", "histogram", "summary", "untyped"])

/** parsePrometheus parses a whole exposition; families by name. */
export function parsePrometheus(text: string): Map<string, ParsedFamily> {
  const families = new Map<string, ParsedFamily>()
  const seenSeries = new Set<string>()
  if (text !== "" && !text.endsWith("\n")) throw new Error("exposition must end with a newline")
  const lines = text.split("\n")
  lines.pop()
  lines.forEach((line, i) => {
    const where = `line ${i + 1}: ${JSON.stringify(line)}`
    if (line === "") throw new Error(`${where}: empty line`)
    if (line.startsWith("#")) {
      const m = /^# (HELP|TYPE) (\S+) ?(.*)$/.exec(line)
      if (!m) {
        if (/^# (HELP|TYPE)/.test(line)) throw new Error(`${where}: malformed ${line.slice(2, 6)}`)
        return // any other comment is allowed
      }
      const [, kind, name, rest] = m as unknown as [string, string, string, string]
      if (!METRIC_NAME.test(name)) throw new Error(`${where}: bad metric name`)
      let family = families.get(name)
      if (kind === "TYPE") {
        if (!TYPES.has(rest)) throw new Error(`${where}: unknown type ${rest}`)
        if (family?.samples.length) throw new Error(`${where}: TYPE after samples`)
        if (family && family.type !== "untyped") throw new Error(`${where}: second TYPE`)
        if (!family) {
          family = { name, type: "untyped", help: undefined, samples: [] }
          families.set(name, family)
        }
        family.type = rest as ParsedFamily["type"]
      } else {
        if (family?.help !== undefined) throw new Error(`${where}: second HELP`)
        if (/\\[^\\n]/.test(rest.replace(/\\\\/g, ""))) throw new Error(`${where}: bad escape in HELP`)
        if (!family) {
          family = { name, type: "untyped", help: undefined, samples: [] }
          families.set(name, family)
        }
        family.help = rest
      }
      return
    }
    const sample = parseSample(line, where)
    const family = familyOf(families, sample.name)
    if (!family) throw new Error(`${where}: sample with no # TYPE before it`)
    const key = `${sample.name}${JSON.stringify(Object.entries(sample.labels).sort())}`
    if (seenSeries.has(key)) throw new Error(`${where}: series given twice`)
    seenSeries.add(key)
    family.samples.push(sample)
  })
  for (const f of families.values()) if (f.type === "histogram") checkHistogram(f)
  return families
}

/** familyOf finds the family a sample belongs to (a histogram's _bucket, _sum and _count belong to it). */
function familyOf(families: Map<string, ParsedFamily>, name: string): ParsedFamily | undefined {
  const direct = families.get(name)
  if (direct) return direct.type === "histogram" ? undefined : direct
  for (const suffix of ["_bucket", "_sum", "_count"]) {
    if (!name.endsWith(suffix)) continue
    const f = families.get(name.slice(0, -suffix.length))
    if (f && (f.type === "histogram" || (f.type === "summary" && suffix !== "_bucket"))) return f
  }
  return undefined
}

function parseSample(line: string, where: string): Sample {
  const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})? (\S+)( -?\d+)?$/.exec(line)
  if (!m) throw new Error(`${where}: malformed sample`)
  const labels = m[2] === undefined ? {} : parseLabels(m[2].slice(1, -1), where)
  return { name: m[1]!, labels, value: parseValue(m[3]!, where) }
}

function parseLabels(body: string, where: string): Record<string, string> {
  const labels: Record<string, string> = {}
  let i = 0
  while (i < body.length) {
    const eq = body.indexOf("=", i)
    if (eq < 0) throw new Error(`${where}: label without =`)
    const name = body.slice(i, eq)
    if (!LABEL_NAME.test(name)) throw new Error(`${where}: bad label name ${JSON.stringify(name)}`)
    if (name in labels) throw new Error(`${where}: label ${name} twice`)
    if (body[eq + 1] !== '"') throw new Error(`${where}: label value not quoted`)
    let j = eq + 2
    let value = ""
    for (;;) {
      if (j >= body.length) throw new Error(`${where}: unterminated label value`)
      const c = body[j]!
      if (c === '"') break
      if (c === "\n") throw new Error(`${where}: raw newline in label value`)
      if (c === "\\") {
        const next = body[j + 1]
        if (next === "\\") value += "\\"
        else if (next === '"') value += '"'
        else if (next === "n") value += "\n"
        else throw new Error(`${where}: bad escape in label value`)
        j += 2
        continue
      }
      value += c
      j++
    }
    labels[name] = value
    i = j + 1
    if (i < body.length) {
      if (body[i] !== ",") throw new Error(`${where}: expected , between labels`)
      i++
    }
  }
  return labels
}

function parseValue(text: string, where: string): number {
  if (text === "+Inf") return Number.POSITIVE_INFINITY
  if (text === "-Inf") return Number.NEGATIVE_INFINITY
  if (text === "NaN") return Number.NaN
  if (!/^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/.test(text)) throw new Error(`${where}: value ${text} is not a number`)
  return Number(text)
}

/** checkHistogram: per series, buckets ascend in le and count, end with +Inf, and +Inf equals _count. */
function checkHistogram(f: ParsedFamily): void {
  const bySeries = new Map<string, { buckets: { le: number; count: number }[]; count?: number; sum?: number }>()
  for (const s of f.samples) {
    const { le, ...rest } = s.labels
    const key = JSON.stringify(Object.entries(rest).sort())
    let entry = bySeries.get(key)
    if (!entry) {
      entry = { buckets: [] }
      bySeries.set(key, entry)
    }
    if (s.name.endsWith("_bucket")) {
      if (le === undefined) throw new Error(`${f.name}: bucket without le`)
      entry.buckets.push({ le: parseValue(le, f.name), count: s.value })
    } else if (s.name.endsWith("_count")) entry.count = s.value
    else entry.sum = s.value
  }
  for (const [key, e] of bySeries) {
    if (e.count === undefined || e.sum === undefined) throw new Error(`${f.name}${key}: no _count or _sum`)
    const last = e.buckets.at(-1)
    if (!last || last.le !== Number.POSITIVE_INFINITY) throw new Error(`${f.name}${key}: no +Inf bucket`)
    if (last.count !== e.count) throw new Error(`${f.name}${key}: +Inf bucket ${last.count} != _count ${e.count}`)
    for (let i = 1; i < e.buckets.length; i++) {
      if (!(e.buckets[i]!.le > e.buckets[i - 1]!.le)) throw new Error(`${f.name}${key}: le does not ascend`)
      if (e.buckets[i]!.count < e.buckets[i - 1]!.count) throw new Error(`${f.name}${key}: buckets not cumulative`)
    }
  }
}

/** value is the one sample of `name` whose labels include `labels`; it throws when there is none or several. */
export function value(families: Map<string, ParsedFamily>, name: string, labels: Record<string, string> = {}): number {
  const matches = samples(families, name, labels)
  if (matches.length !== 1) throw new Error(`${name}${JSON.stringify(labels)}: ${matches.length} samples`)
  return matches[0]!.value
}

/** samples lists the samples named `name` (a family's own or a histogram's _count, say) whose labels include these. */
export function samples(
  families: Map<string, ParsedFamily>,
  name: string,
  labels: Record<string, string> = {},
): Sample[] {
  const out: Sample[] = []
  for (const f of families.values()) {
    for (const s of f.samples) {
      if (s.name !== name) continue
      if (Object.entries(labels).every(([k, v]) => s.labels[k] === v)) out.push(s)
    }
  }
  return out
}

/** sum adds the values of every matching sample (0 for none). */
export function sum(families: Map<string, ParsedFamily>, name: string, labels: Record<string, string> = {}): number {
  return samples(families, name, labels).reduce((a, s) => a + s.value, 0)
}
