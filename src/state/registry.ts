/** @module registry: counters, gauges and histograms that outlive generations, read by /status and (later) /metrics. */

/** Metric names follow portcullis_<area>_<thing>_<unit>; counters end in _total (the Prometheus convention). */
const NAME = /^portcullis_[a-z][a-z0-9]*(_[a-z0-9]+)+$/
const LABEL = /^[a-z][a-z0-9_]*$/

/** OVERFLOW is the label value every series past a family's maxSeries is counted under, so memory stays bounded. */
export const OVERFLOW = "_overflow"

/** Counter only goes up; inc() is one field add, so a pre-resolved Counter is what the hot path holds. */
export class Counter {
  value = 0

  inc(by = 1): void {
    this.value += by
  }
}

/** Gauge is a value that goes up and down (open connections, keys in the ring). */
export class Gauge {
  value = 0

  set(value: number): void {
    this.value = value
  }

  inc(by = 1): void {
    this.value += by
  }

  dec(by = 1): void {
    this.value -= by
  }
}

/** Histogram counts observations into fixed upper bounds (Prometheus `le`), plus their sum and count. */
export class Histogram {
  /** bounds: ascending upper bounds; +Inf is implied after the last. */
  readonly bounds: readonly number[]
  /** counts[i]: observations <= bounds[i] and > bounds[i-1] (not cumulative); counts[bounds.length]: above all. */
  readonly counts: Float64Array
  sum = 0
  count = 0

  constructor(bounds: readonly number[]) {
    this.bounds = bounds
    this.counts = new Float64Array(bounds.length + 1)
  }

  /** observe finds the bucket by linear scan: bucket lists are short (about 10) and this allocates nothing. */
  observe(value: number): void {
    const bounds = this.bounds
    let i = 0
    while (i < bounds.length && value > bounds[i]!) i++
    this.counts[i]!++
    this.sum += value
    this.count++
  }
}

/** DURATION_BUCKETS suit request and handshake durations in seconds (1 ms to 10 s). */
export const DURATION_BUCKETS: readonly number[] = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]

type Kind = "counter" | "gauge" | "histogram"
type Instrument = Counter | Gauge | Histogram

/** SeriesSnapshot: one label combination's values; histograms give cumulative buckets as a text writer needs them. */
export interface SeriesSnapshot {
  labels: Record<string, string>
  value?: number
  buckets?: { le: number; count: number }[]
  sum?: number
  count?: number
}

/** MetricSnapshot: one family, ready for a Prometheus text writer (`# HELP`, `# TYPE`, then each series). */
export interface MetricSnapshot {
  name: string
  help: string
  type: Kind
  series: SeriesSnapshot[]
}

/**
 * Family is one metric name with a fixed list of label names. child() is a Map lookup: call it once per listener,
 * upstream or backend when a generation is built, keep the handle, and only inc()/observe() per request.
 */
export class Family<T extends Instrument> {
  readonly name: string
  readonly help: string
  readonly type: Kind
  readonly labelNames: readonly string[]
  readonly maxSeries: number
  readonly #make: () => T
  readonly #children = new Map<string, { values: readonly string[]; child: T }>()

  constructor(name: string, help: string, type: Kind, labelNames: readonly string[], maxSeries: number, make: () => T) {
    this.name = name
    this.help = help
    this.type = type
    this.labelNames = labelNames
    this.maxSeries = maxSeries
    this.#make = make
  }

  /** child returns the series for these label values (one per label name), made on first use. */
  child(...values: string[]): T {
    if (values.length !== this.labelNames.length) {
      throw new RangeError(`${this.name} takes labels (${this.labelNames.join(", ")}), got ${values.length} values`)
    }
    const key = values.join("\u0000")
    let entry = this.#children.get(key)
    if (entry) return entry.child
    // Past maxSeries every new combination shares one overflow series: counts are kept, memory is bounded.
    if (this.#children.size >= this.maxSeries) return this.#overflow()
    entry = { values, child: this.#make() }
    this.#children.set(key, entry)
    return entry.child
  }

  #overflow(): T {
    const values = this.labelNames.map(() => OVERFLOW)
    const key = values.join("\u0000")
    let entry = this.#children.get(key)
    if (!entry) {
      entry = { values, child: this.#make() }
      this.#children.set(key, entry)
    }
    return entry.child
  }

  /** size is the number of series (label combinations) held. */
  get size(): number {
    return this.#children.size
  }

  snapshot(): MetricSnapshot {
    const series: SeriesSnapshot[] = []
    for (const { values, child } of this.#children.values()) {
      const labels: Record<string, string> = {}
      for (let i = 0; i < values.length; i++) labels[this.labelNames[i]!] = values[i]!
      if (child instanceof Histogram) {
        const buckets: { le: number; count: number }[] = []
        let running = 0
        for (let i = 0; i < child.bounds.length; i++) {
          running += child.counts[i]!
          buckets.push({ le: child.bounds[i]!, count: running })
        }
        buckets.push({ le: Number.POSITIVE_INFINITY, count: child.count })
        series.push({ labels, buckets, sum: child.sum, count: child.count })
      } else {
        series.push({ labels, value: child.value })
      }
    }
    return { name: this.name, help: this.help, type: this.type, series }
  }
}

/** FamilyOptions: labels (names, snake_case) and the most series kept before new ones go to the overflow series. */
export interface FamilyOptions {
  labels?: readonly string[]
  maxSeries?: number
}

/**
 * MetricsRegistry holds every metric family of the process. It is owned by the runtime, so a reload keeps every
 * count; registering a name again returns the same family (each generation asks for its handles anew).
 */
export class MetricsRegistry {
  readonly #families = new Map<string, Family<Instrument>>()

  counter(name: string, help: string, options: FamilyOptions = {}): Family<Counter> {
    if (!name.endsWith("_total")) throw new RangeError(`counter ${name} must end in _total`)
    return this.#family(name, help, "counter", options, () => new Counter())
  }

  gauge(name: string, help: string, options: FamilyOptions = {}): Family<Gauge> {
    return this.#family(name, help, "gauge", options, () => new Gauge())
  }

  histogram(
    name: string,
    help: string,
    options: FamilyOptions & { buckets?: readonly number[] } = {},
  ): Family<Histogram> {
    const bounds = options.buckets ?? DURATION_BUCKETS
    for (let i = 1; i < bounds.length; i++) {
      if (!(bounds[i]! > bounds[i - 1]!)) throw new RangeError(`histogram ${name}: buckets must ascend`)
    }
    const frozen = Object.freeze([...bounds])
    return this.#family(name, help, "histogram", options, () => new Histogram(frozen))
  }

  /** snapshot lists every family with its series, in registration order: what a text writer walks. */
  snapshot(): MetricSnapshot[] {
    return [...this.#families.values()].map((f) => f.snapshot())
  }

  #family<T extends Instrument>(
    name: string,
    help: string,
    type: Kind,
    options: FamilyOptions,
    make: () => T,
  ): Family<T> {
    const labels = options.labels ?? []
    const existing = this.#families.get(name)
    if (existing) {
      if (existing.type !== type || existing.labelNames.join() !== labels.join()) {
        throw new RangeError(`metric ${name} is already registered as a ${existing.type} (${existing.labelNames})`)
      }
      return existing as Family<T>
    }
    if (!NAME.test(name)) throw new RangeError(`metric name ${name} must read portcullis_<area>_<thing>_<unit>`)
    for (const label of labels) if (!LABEL.test(label)) throw new RangeError(`metric ${name}: label ${label}`)
    const family = new Family<T>(name, help, type, labels, options.maxSeries ?? 1000, make)
    this.#families.set(name, family as unknown as Family<Instrument>)
    return family
  }
}
