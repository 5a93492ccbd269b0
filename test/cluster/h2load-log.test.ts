/** The zero-downtime tests' reading of h2load's --log-file: which failed requests were sent (load.ts h2loadFailures). */
import assert from "node:assert/strict"
import { test } from "node:test"
import { h2loadFailures } from "./load.ts"

test("a failed request with start time 0 never left h2load; one with a start time, or any 4xx/5xx, counts", () => {
  // Lines as h2load 1.52 writes them: start µs since the epoch, status (-1: the stream did not complete), µs.
  const log = [
    "1796166812367233\t200\t8776",
    "0\t-1\t2485167501", // refused by nghttp2 before its HEADERS were sent (GOAWAY race)
    "1796166812371866\t-1\t28941", // sent, then reset or cut: a real failure
    "1796166812371868\t502\t28961",
    "1796166812376050\t304\t44390",
    "",
  ].join("\n")
  assert.deepEqual(h2loadFailures(log), { sentFailed: 2, unsent: 1 })
  assert.deepEqual(h2loadFailures(""), { sentFailed: 0, unsent: 0 })
})
