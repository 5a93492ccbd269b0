/** @module report: cell results, medians over passes, ratios to HAProxy, and the tables printed at the end. */

/** WorkloadId names the workloads in table order. */
export type WorkloadId = "W1" | "W2" | "W3" | "W3c" | "W4" | "W5" | "W6" | "W7" | "W7c"

/** CellRun is one measurement of one target on one workload in one pass (also one JSON line). */
export interface CellRun {
  type: "cell"
  pass: number
  target: string
  workload: WorkloadId
  ok: boolean
  problems: string[]
  /** work done in the window, in `unit` (requests, handshakes, MB, or bytes per connection for W6) */
  work: number
  unit: string
  seconds: number
  proxy_cpu_s: number
  /** the figure that counts: work per proxy CPU-second (W6: KiB per idle connection) */
  figure: number
  rate_per_s: number
  proxy_cpu_util: number
  extra?: Record<string, unknown>
}

/** Summary is the median over passes of one target and workload, with its ratio to HAProxy. */
export interface Summary {
  type: "summary"
  target: string
  workload: WorkloadId
  ok: boolean
  problems: string[]
  passes: number
  figure: number
  rate_per_s: number
  ratio: number | null
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b)
  const m = Math.floor(s.length / 2)
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2
}

/** summarise takes the median of each cell over its passes; a cell with any failed pass is failed, never a number. */
export function summarise(runs: CellRun[], anchor: string): Summary[] {
  const groups = new Map<string, CellRun[]>()
  for (const r of runs) {
    const k = `${r.target}\u0000${r.workload}`
    groups.set(k, [...(groups.get(k) ?? []), r])
  }
  const out: Summary[] = []
  for (const list of groups.values()) {
    const first = list[0]!
    const ok = list.every((r) => r.ok)
    const byText = new Map<string, number[]>()
    for (const r of list) for (const p of r.problems) byText.set(p, [...(byText.get(p) ?? []), r.pass])
    const problems = [...byText].map(([p, ps]) => `pass ${ps.join(", ")}: ${p}`)
    out.push({
      type: "summary",
      target: first.target,
      workload: first.workload,
      ok,
      problems,
      passes: list.length,
      figure: ok ? median(list.map((r) => r.figure)) : Number.NaN,
      rate_per_s: ok ? median(list.map((r) => r.rate_per_s)) : Number.NaN,
      ratio: null,
    })
  }
  for (const s of out) {
    const a = out.find((x) => x.target === anchor && x.workload === s.workload)
    if (s.ok && a?.ok && a.figure > 0) s.ratio = s.figure / a.figure
  }
  return out
}

/**
 * RatioCheck: a figure of one row over another's on one workload (or the row's own figure, `versus` null), against a
 * bound: at least `bound` for work per CPU-second, at most for latency and memory (W6, W7: lower is better).
 */
export interface RatioCheck {
  type: "check"
  name: string
  workload: WorkloadId
  target: string
  versus: string | null
  bound: number
  atMost: boolean
  /** null when either cell is missing or failed (the check is then "not run", never a pass) */
  ratio: number | null
  pass: boolean | null
  /** why there is no ratio: a cell failed, or the reference figure is 0 or less (W7: within the direct path's noise) */
  why?: string
}

type CheckSpec = Omit<RatioCheck, "type" | "ratio" | "pass" | "atMost"> & { atMost?: boolean }

/** mustReach: issue 10's "must reach" column for the defaults row against HAProxy with its log on. */
const mustReach = (workload: WorkloadId, bound: number, atMost = false): CheckSpec => ({
  name: "defaults vs HAProxy (issue 10 must reach)",
  workload,
  target: "portcullis",
  versus: "haproxy",
  bound,
  atMost,
})

/** workersVs: two workers do at least 0.9x the per CPU-second work of `versus` on W1-W4. */
const workersVs = (name: string, versus: string): CheckSpec[] =>
  (["W1", "W2", "W3", "W4"] as const).map((workload) => ({
    name,
    workload,
    target: "portcullis-workers2",
    versus,
    bound: 0.9,
  }))

/** CHECKS: the same-run figures the issues set; a check runs when its rows ran. */
const CHECKS: readonly CheckSpec[] = [
  { name: "metrics on vs off", workload: "W2", target: "portcullis", versus: "portcullis-metrics-off", bound: 0.95 },
  { name: "access log on vs off", workload: "W2", target: "portcullis", versus: "portcullis-log-off", bound: 0.9 },
  mustReach("W1", 0.8),
  mustReach("W2", 0.5),
  mustReach("W3", 0.35),
  mustReach("W4", 1.0),
  mustReach("W5", 0.8),
  mustReach("W7", 2.0, true),
  {
    name: "KiB per idle connection (issue 10 must reach)",
    workload: "W6",
    target: "portcullis",
    versus: null,
    bound: 44,
    atMost: true,
  },
  // issue 12: two workers against one process
  ...workersVs("2 workers vs 1 process (issue 12)", "portcullis"),
  // The coordination cost alone, for information: two workers share both cores with the load tool and the backend,
  // which costs any process per CPU-second (docs/benchmarks.md, "Per CPU-second figures depend on how busy the
  // proxy is"); portcullis-2cores is one process on those same cores, so this ratio leaves the topology out.
  ...workersVs("2 workers vs 1 process on the same cores (coordination cost)", "portcullis-2cores"),
]

/** checkRatios evaluates every check whose rows ran: target's figure / versus's figure (or the figure) against its bound. */
export function checkRatios(summaries: Summary[]): RatioCheck[] {
  const out: RatioCheck[] = []
  for (const c of CHECKS) {
    const a = summaries.find((s) => s.target === c.target && s.workload === c.workload)
    const b = c.versus === null ? undefined : summaries.find((s) => s.target === c.versus && s.workload === c.workload)
    if (!a || (c.versus !== null && !b)) continue
    const atMost = c.atMost ?? false
    let ratio: number | null = null
    let why: string | undefined
    if (c.versus === null) ratio = a.ok ? a.figure : null
    else if (a.ok && b?.ok && b.figure > 0) ratio = a.figure / b.figure
    else if (a.ok && b?.ok)
      why = `${c.versus}'s figure is ${b.figure}: no ratio to it (W7: its added latency is within the noise of the direct path)`
    if (ratio === null) why ??= "a cell failed"
    const pass = ratio === null ? null : atMost ? ratio <= c.bound : ratio >= c.bound
    out.push({ type: "check", ...c, atMost, ratio, pass, ...(why && { why }) })
  }
  return out
}

/** renderChecks prints one line per check: `metrics on vs off, W2 (portcullis / portcullis-metrics-off) >= 0.95: 0.970 PASS`. */
export function renderChecks(checks: RatioCheck[]): string {
  const lines = checks.map((c) => {
    const verdict = c.pass === null ? `NOT RUN (${c.why ?? "a cell failed"})` : c.pass ? "PASS" : "FAIL"
    const ratio = c.ratio === null ? "" : `${c.ratio.toFixed(3)} `
    const rows = c.versus === null ? c.target : `${c.target} / ${c.versus}`
    return `- ${c.name}, ${c.workload} (${rows}) ${c.atMost ? "<=" : ">="} ${c.bound}: ${ratio}${verdict}`
  })
  return ["Checks (same-run figures; ratios of the per proxy CPU-second figure, W6 KiB, W7 p99 ratio):", ...lines].join(
    "\n",
  )
}

const fmt = (n: number, digits = 0) =>
  n.toLocaleString("en-US", { minimumFractionDigits: digits, maximumFractionDigits: digits })

/** FIGURE_UNITS says what each workload's figure counts. */
export const FIGURE_UNITS: Record<WorkloadId, string> = {
  W1: "full handshakes per proxy CPU-s",
  W2: "keep-alive requests per proxy CPU-s",
  W3: "HTTP/2 requests per proxy CPU-s",
  W3c: "HTTP/2 requests per proxy CPU-s, HTTP/2 (h2c) to the backend",
  W4: "MB (10^6 body bytes) per proxy CPU-s",
  W5: "resumed handshakes per proxy CPU-s",
  W6: "KiB RSS per idle TLS connection (ratio: lower is better)",
  W7: "p99 latency added over the backend direct, µs, at 5,000 keep-alive req/s (ratio: lower is better)",
  W7c: "p99 latency added over the backend direct, µs, at 500 new TLS connections/s, full handshake + GET (ratio: lower is better)",
}

function cell(s: Summary | undefined, kind: "figure" | "rate", failShort: (s: Summary) => string): string {
  if (!s) return "–"
  if (!s.ok) return failShort(s)
  const latency = s.workload === "W7" || s.workload === "W7c"
  if (kind === "rate") {
    if (s.workload === "W6") return "–"
    if (latency) return `${fmt(s.rate_per_s)}/s`
    return `${fmt(s.rate_per_s)}${s.workload === "W4" ? " MB" : ""}/s`
  }
  const ratio = s.ratio === null ? "" : `${s.ratio.toFixed(2)}x `
  const fig = s.workload === "W6" ? `${fmt(s.figure, 1)} KiB` : latency ? `${fmt(s.figure)} µs` : fmt(s.figure)
  return `${ratio}${fig}`
}

/** renderTables returns the markdown tables: per proxy CPU-second with ratios, then raw rates; and the failure notes. */
export function renderTables(
  summaries: Summary[],
  targets: string[],
  workloads: WorkloadId[],
  labels: Record<string, string>,
): string {
  const failures: string[] = []
  const failShort = (s: Summary) => {
    const n = failures.findIndex((f) => f.startsWith(`${s.target} ${s.workload}:`))
    const idx = n >= 0 ? n : failures.push(`${s.target} ${s.workload}: ${s.problems.join("; ")}`) - 1
    return `FAILED [${idx + 1}]`
  }
  const find = (t: string, w: WorkloadId) => summaries.find((s) => s.target === t && s.workload === w)
  const table = (kind: "figure" | "rate") => {
    const head = `| target | ${workloads.join(" | ")} |`
    const sep = `|---|${workloads.map(() => "---:").join("|")}|`
    const rows = targets.map(
      (t) => `| ${labels[t] ?? t} | ${workloads.map((w) => cell(find(t, w), kind, failShort)).join(" | ")} |`,
    )
    return [head, sep, ...rows].join("\n")
  }
  const legend = workloads.map((w) => `${w}: ${FIGURE_UNITS[w]}`).join("; ")
  const parts = [
    "Per proxy CPU-second (ratio to HAProxy in the same run, then the figure; median over passes):",
    "",
    table("figure"),
    "",
    legend,
    "",
    "Raw rate per wall-clock second (median; load generator and backend share core 0, so this is not the figure that counts):",
    "",
    table("rate"),
  ]
  if (failures.length > 0) parts.push("", "Failed cells:", ...failures.map((f, i) => `[${i + 1}] ${f}`))
  return parts.join("\n")
}
