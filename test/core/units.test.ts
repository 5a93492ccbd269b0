/** Tables for the duration and size parsers config files rely on, malformed input included. */
import assert from "node:assert/strict"
import { describe, test } from "node:test"
import { formatDuration, parseDuration, parseSize } from "../../src/core/units.ts"

describe("parseDuration", () => {
  const good: [string | number, number][] = [
    ["30s", 30_000],
    ["250ms", 250],
    ["1m30s", 90_000],
    ["1h", 3_600_000],
    ["2d", 172_800_000],
    ["1h1m1s1ms", 3_661_001],
    ["1.5s", 1500],
    ["0.25s", 250],
    ["1.5ms", 2],
    ["0s", 0],
    ["0", 0],
    ["100", 100],
    ["  5s  ", 5000],
    [0, 0],
    [1500, 1500],
    [2.4, 2],
  ]
  for (const [input, expected] of good) {
    test(`parses ${JSON.stringify(input)} as ${expected} ms`, () => {
      assert.equal(parseDuration(input), expected)
    })
  }

  const bad: (string | number)[] = [
    "",
    "   ",
    "s",
    "ms",
    "5S",
    "5 s",
    "1m 30s",
    "-1s",
    "+1s",
    "1x",
    "1s2",
    ".5s",
    "5.s",
    "1e3",
    "5sec",
    "five seconds",
    "1w",
    -5,
    Number.NaN,
    Number.POSITIVE_INFINITY,
  ]
  for (const input of bad) {
    test(`refuses ${JSON.stringify(String(input))}`, () => {
      assert.equal(parseDuration(input), undefined)
    })
  }
})

describe("parseSize", () => {
  const good: [string | number, number][] = [
    ["512", 512],
    ["0", 0],
    ["1b", 1],
    ["64k", 64_000],
    ["64KB", 64_000],
    ["64KiB", 65_536],
    ["64kib", 65_536],
    ["1.5KiB", 1536],
    ["1MiB", 1_048_576],
    ["2m", 2_000_000],
    ["1MB", 1_000_000],
    ["1GiB", 1_073_741_824],
    ["3g", 3_000_000_000],
    ["1 kb", 1000],
    [" 16KiB ", 16_384],
    [0, 0],
    [4096, 4096],
  ]
  for (const [input, expected] of good) {
    test(`parses ${JSON.stringify(input)} as ${expected} bytes`, () => {
      assert.equal(parseSize(input), expected)
    })
  }

  const bad: (string | number)[] = ["", "k", "MiB", "-1", "-1k", "1tb", "1TiB", "1e3", "0x10", "1,024", "1k1k", 1.5, -1]
  for (const input of bad) {
    test(`refuses ${JSON.stringify(String(input))}`, () => {
      assert.equal(parseSize(input), undefined)
    })
  }
})

describe("formatDuration", () => {
  const table: [number, string][] = [
    [0, "0ms"],
    [1, "1ms"],
    [999, "999ms"],
    [1500, "1500ms"],
    [1000, "1s"],
    [90_000, "90s"],
    [60_000, "1m"],
    [5_400_000, "90m"],
    [3_600_000, "1h"],
    [7_200_000, "2h"],
    [86_400_000, "1d"],
    [31_536_000_000, "365d"],
  ]
  for (const [ms, expected] of table) {
    test(`formats ${ms} ms as ${expected}`, () => {
      assert.equal(formatDuration(ms), expected)
    })
  }

  test("what it formats parses back to the same milliseconds", () => {
    for (const [ms] of table) assert.equal(parseDuration(formatDuration(ms)), ms)
  })
})
