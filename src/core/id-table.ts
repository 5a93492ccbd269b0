/**
 * @module id-table: a Map from small integer ids (the streams of one HTTP/2 session) to values, for a table that
 * lives long while its entries come and go many times a second.
 *
 * Why not a Map: V8 rehashes a Map's hash table as entries are added and deleted, and the table it leaves behind
 * keeps its entries and a link to the table that replaced it (for iterators still walking it). Once a session is old
 * enough for its table to sit in the old generation, that dead table is a root for every young-generation GC: the
 * next table, the one after, and every stream any of them held survive each scavenge and are promoted, until a full
 * GC. Measured on a bare node:http2 server (h2load, 10 connections x 10 streams in flight): 10.8 MB of the 46 MB
 * allocated between two scavenges survived each one, 20-30 ms a pause; with the session's stream Map replaced by
 * this table, 150 KB and 0.6 ms. Five streams in flight per session are enough: four fit a Map's first table.
 * In Portcullis the same survivors have a second cause, V8's pretenuring (v8-flags.ts), and go only with both fixed.
 *
 * How: two parallel arrays sorted by id, searched by halves. Ids mostly arrive in increasing order (stream ids
 * always do), so set() is usually a push. The arrays never shrink: a deleted entry's slots are cleared, so no
 * backing store is left behind holding values, and none is allocated once the table has reached its peak size.
 */
export class IdTable<V> {
  readonly #ids: number[] = []
  readonly #values: (V | undefined)[] = []
  #size = 0

  get size(): number {
    return this.#size
  }

  get(id: number): V | undefined {
    const i = this.#find(id)
    return i >= 0 ? this.#values[i] : undefined
  }

  has(id: number): boolean {
    return this.#find(id) >= 0
  }

  set(id: number, value: V): this {
    const n = this.#size
    const ids = this.#ids
    if (n === 0 || ids[n - 1]! < id) {
      this.#put(n, id, value)
      this.#size = n + 1
      return this
    }
    const i = this.#find(id)
    if (i >= 0) {
      this.#values[i] = value
      return this
    }
    // Out of order: open a slot at the insertion point (-i - 1).
    const at = -i - 1
    this.#put(n, 0, undefined)
    for (let j = n; j > at; j--) {
      ids[j] = ids[j - 1]!
      this.#values[j] = this.#values[j - 1]
    }
    ids[at] = id
    this.#values[at] = value
    this.#size = n + 1
    return this
  }

  delete(id: number): boolean {
    const i = this.#find(id)
    if (i < 0) return false
    const last = this.#size - 1
    const ids = this.#ids
    const values = this.#values
    for (let j = i; j < last; j++) {
      ids[j] = ids[j + 1]!
      values[j] = values[j + 1]
    }
    ids[last] = 0
    values[last] = undefined
    this.#size = last
    return true
  }

  clear(): void {
    for (let i = 0; i < this.#size; i++) {
      this.#ids[i] = 0
      this.#values[i] = undefined
    }
    this.#size = 0
  }

  /** forEach calls fn for each entry in id order, over a copy: fn may delete entries (a session destroying its streams). */
  forEach(fn: (value: V, id: number, table: this) => void): void {
    const n = this.#size
    if (n === 0) return
    const ids = this.#ids.slice(0, n)
    const values = this.#values.slice(0, n)
    for (let i = 0; i < n; i++) fn(values[i] as V, ids[i]!, this)
  }

  /** values lists the values in id order (a copy). */
  values(): V[] {
    return this.#values.slice(0, this.#size) as V[]
  }

  /** #put writes slot i, growing the arrays by one when i is their length (they stay packed). */
  #put(i: number, id: number, value: V | undefined): void {
    if (i === this.#ids.length) {
      this.#ids.push(id)
      this.#values.push(value)
    } else {
      this.#ids[i] = id
      this.#values[i] = value
    }
  }

  /** #find: the index of id, or -(insertion point) - 1 when it is absent. */
  #find(id: number): number {
    const ids = this.#ids
    let lo = 0
    let hi = this.#size - 1
    // The newest entry is the one most asked for (its frames arrive next): look there first.
    if (hi >= 0 && ids[hi] === id) return hi
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1
      const at = ids[mid]!
      if (at < id) lo = mid + 1
      else if (at > id) hi = mid - 1
      else return mid
    }
    return -lo - 1
  }
}
