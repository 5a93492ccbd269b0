import assert from "node:assert/strict"
import { test } from "node:test"
import { setFlagsFromString } from "node:v8"
import { runInNewContext } from "node:vm"
import { IdTable } from "../../src/core/id-table.ts"

/** entries lists a table's entries in forEach order. */
function entries<V>(table: IdTable<V>): [number, V][] {
  const out: [number, V][] = []
  table.forEach((v, id) => {
    out.push([id, v])
  })
  return out
}

/** sorted is a Map's entries by id: the order an IdTable walks in. */
function sorted<V>(map: Map<number, V>): [number, V][] {
  return [...map.entries()].sort((a, b) => a[0] - b[0])
}

test("IdTable behaves as a Map of ids under a long random run of sets and deletes, in and out of order", () => {
  // A fixed xorshift seed: the same sequence on every run, so a failure can be replayed.
  let seed = 0x2545f491
  const random = (n: number) => {
    seed ^= seed << 13
    seed ^= seed >>> 17
    seed ^= seed << 5
    return (seed >>> 0) % n
  }
  const table = new IdTable<string>()
  const model = new Map<number, string>()
  let next = 1
  for (let step = 0; step < 20_000; step++) {
    const op = random(10)
    if (op < 5) {
      // Mostly increasing ids (new streams), sometimes an old or a missing one (out of order, or a replace).
      if (random(4) !== 0) next += 2
      const id = random(4) === 0 ? 1 + random(next + 10) : next
      const value = `v${step}`
      assert.equal(table.set(id, value), table)
      model.set(id, value)
    } else if (op < 9) {
      const id = 1 + random(next + 4)
      assert.equal(table.delete(id), model.delete(id), `delete(${id}) at step ${step}`)
    } else {
      const id = 1 + random(next + 4)
      assert.equal(table.get(id), model.get(id))
      assert.equal(table.has(id), model.has(id))
    }
    assert.equal(table.size, model.size)
    if (step % 500 === 0) assert.deepEqual(entries(table), sorted(model))
  }
  assert.deepEqual(entries(table), sorted(model))
  assert.deepEqual(
    table.values(),
    sorted(model).map(([, v]) => v),
  )
  table.clear()
  assert.equal(table.size, 0)
  assert.deepEqual(entries(table), [])
  assert.equal(table.get(next), undefined)
})

test("IdTable.forEach may delete entries as it walks (a session destroying its streams) and sees each once", () => {
  const table = new IdTable<number>()
  for (let id = 1; id <= 99; id += 2) table.set(id, id * 10)
  const seen: number[] = []
  table.forEach((value, id, self) => {
    seen.push(value)
    assert.equal(self, table)
    self.delete(id)
    self.delete(id + 2) // the next one too: the walk still visits it (over a copy), as a Map's forEach would not
  })
  assert.equal(seen.length, 50)
  assert.equal(table.size, 0)
  // Emptied, then filled again: the slots are reused and the order is by id.
  table.set(7, 70).set(3, 30).set(5, 50)
  assert.deepEqual(entries(table), [
    [3, 30],
    [5, 50],
    [7, 70],
  ])
})

test("IdTable does not hold a deleted value: its slot is cleared, so a full GC frees a dead stream", async () => {
  // gc() without starting the test runner with --expose-gc: the flag is read when a context is made.
  setFlagsFromString("--expose-gc")
  const gc = runInNewContext("gc") as () => void
  const table = new IdTable<{ id: number }>()
  const refs: WeakRef<{ id: number }>[] = []
  // Filled in a function of its own: an async function's saved registers would still hold the last value.
  const fill = () => {
    for (let id = 1; id <= 9; id += 2) {
      const value = { id }
      refs.push(new WeakRef(value))
      table.set(id, value)
    }
  }
  fill()
  table.delete(3) // from the middle: later entries shift down over it
  table.delete(9) // the last: its slot is the one left behind
  // WeakRef targets are kept until the current job ends: let it end before collecting.
  await new Promise((resolve) => setImmediate(resolve))
  gc()
  assert.deepEqual(
    refs.map((r) => r.deref()?.id),
    [1, undefined, 5, 7, undefined],
  )
  assert.deepEqual(
    table.values().map((v) => v.id),
    [1, 5, 7],
  )
})
