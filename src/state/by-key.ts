/** @module by-key: long-lived values by a stable key (a listener address, an upstream name) across generations. */

/**
 * ByKey keeps one value per key for as long as some generation uses the key. get() makes it on first use;
 * retain() drops (and disposes) the values whose keys the running generation no longer has.
 */
export class ByKey<T> {
  readonly #items = new Map<string, T>()
  readonly #dispose: (value: T) => void

  constructor(dispose: (value: T) => void = () => {}) {
    this.#dispose = dispose
  }

  get(key: string, make: () => T): T {
    let value = this.#items.get(key)
    if (value === undefined) {
      value = make()
      this.#items.set(key, value)
    }
    return value
  }

  peek(key: string): T | undefined {
    return this.#items.get(key)
  }

  /** retain keeps only these keys. */
  retain(keys: Iterable<string>): void {
    const keep = new Set(keys)
    for (const [key, value] of this.#items) {
      if (keep.has(key)) continue
      this.#items.delete(key)
      this.#dispose(value)
    }
  }

  get size(): number {
    return this.#items.size
  }

  /** clear disposes every value (the runtime is closing). */
  clear(): void {
    this.retain([])
  }
}
