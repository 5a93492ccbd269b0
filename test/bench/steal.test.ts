import assert from "node:assert/strict"
import { cpus } from "node:os"
import { test } from "node:test"
import { type CoreTimes, coreTimes, leastStolen, stealShare } from "../../bench/lib/steal.ts"

const STAT = `cpu  300 0 100 5000 10 0 20 30 0 0
cpu0 100 0 50 2500 5 0 10 10 7 0
cpu1 200 0 50 2500 5 0 10 20 0 0
intr 12345
`

test("coreTimes reads each core's line: the total of the first eight fields and the steal field", () => {
  assert.deepEqual(coreTimes(STAT), [
    { total: 2675, steal: 10 },
    { total: 2785, steal: 20 },
  ])
})

test("coreTimes reads this machine's /proc/stat: one entry per core, steal within total", () => {
  const cores = coreTimes()
  assert.equal(cores.length, cpus().length)
  for (const c of cores) assert.ok(c.steal >= 0 && c.steal <= c.total && c.total > 0, JSON.stringify(c))
})

test("stealShare is the stolen part of each core's time between two readings", () => {
  const before = [
    { total: 1000, steal: 10 },
    { total: 1000, steal: 0 },
  ]
  const after = [
    { total: 1200, steal: 30 },
    { total: 1000, steal: 0 },
  ]
  assert.deepEqual(stealShare(before, after), [0.1, 0])
})

/** readings makes a read() that returns one core's times with the given steal per take (100 jiffies a take). */
function readings(stealPerTake: number[]): () => CoreTimes[] {
  let total = 0
  let steal = 0
  let reads = 0
  return () => {
    if (reads % 2 === 1) {
      total += 100
      steal += stealPerTake[(reads - 1) / 2]!
    }
    reads++
    return [{ total, steal }]
  }
}

test("leastStolen takes once when the host was quiet", async () => {
  let runs = 0
  const r = await leastStolen(async () => ++runs, { limit: 0.05, takes: 3, read: readings([2]) })
  assert.equal(runs, 1)
  assert.equal(r.best.result, 1)
  assert.deepEqual(r.best.steal, [0.02])
  assert.deepEqual(r.others, [])
})

test("leastStolen takes again while steal is over the limit and keeps the least stolen take", async () => {
  let runs = 0
  const r = await leastStolen(async () => ++runs, { limit: 0.05, takes: 3, read: readings([30, 8, 12]) })
  assert.equal(runs, 3, "three takes, none under the limit")
  assert.equal(r.best.take, 2)
  assert.equal(r.best.result, 2)
  assert.deepEqual(
    r.others.map((t) => t.take),
    [1, 3],
  )
})

test("leastStolen stops at the first take under the limit", async () => {
  let runs = 0
  const r = await leastStolen(async () => ++runs, { limit: 0.05, takes: 3, read: readings([30, 4, 0]) })
  assert.equal(runs, 2)
  assert.equal(r.best.take, 2)
  assert.deepEqual(
    r.others.map((t) => t.take),
    [1],
  )
})

test("leastStolen ends early when told to stop", async () => {
  let runs = 0
  const r = await leastStolen(async () => ++runs, {
    limit: 0.05,
    takes: 3,
    read: readings([30, 30, 30]),
    stop: () => true,
  })
  assert.equal(runs, 1)
  assert.equal(r.best.take, 1)
})
