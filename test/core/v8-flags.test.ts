import assert from "node:assert/strict"
import { execFile } from "node:child_process"
import { test } from "node:test"
import { fileURLToPath } from "node:url"

const FLAGS_MODULE = fileURLToPath(new URL("../../src/core/v8-flags.ts", import.meta.url))
const MAIN = fileURLToPath(new URL("../../src/main.ts", import.meta.url))

/**
 * A script whose object and array literals all outlive their scavenges: V8, left to itself, pretenures their
 * allocation sites after a few (`--trace-pretenuring-statistics` prints "=> tenure").
 */
const LONG_LIVED = `
const kept = []
function make(i) { return { id: i, name: "n" + i, tags: [i] } }
for (let round = 0; round < 20; round++) for (let i = 0; i < 50000; i++) kept.push(make(i))
console.log("made", kept.length)
`

function node(args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(process.execPath, args, { timeout: 60_000, maxBuffer: 16 * 1024 * 1024 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${err.message}\n${stderr}`))
      else resolve(stdout)
    })
  })
}

const tenured = (out: string) => out.split("\n").filter((line) => line.includes("=> tenure")).length

/**
 * The script runs unoptimized: Maglev and Turbofan code allocates these literals without the mementos V8 counts, so
 * with them the default run reached "tenure" in only 7 of 15 runs (it depends on when `make` is optimized); without
 * them, in 30 of 30, and with the flag set, 0 of 30.
 */
const TRACE = ["--trace-pretenuring-statistics", "--no-maglev", "--no-turbofan", "--input-type=module", "-e"]

test("V8 pretenures long-lived literals by default (the control: this test can tell the flag's effect)", async () => {
  const out = await node([...TRACE, LONG_LIVED])
  assert.match(out, /made 1000000/)
  assert.ok(tenured(out) > 0, `V8 decided to pretenure no site:\n${out.slice(0, 2000)}`)
})

test("v8-flags.ts turns allocation-site pretenuring off for the rest of the process", async () => {
  const out = await node([...TRACE, `await import(${JSON.stringify(FLAGS_MODULE)});\n${LONG_LIVED}`])
  assert.match(out, /made 1000000/)
  assert.equal(tenured(out), 0, out.slice(0, 2000))
})

test("main.ts imports v8-flags.ts before any other module (so the flag is set before they allocate)", async () => {
  const { readFile } = await import("node:fs/promises")
  const source = await readFile(MAIN, "utf8")
  const firstImport = source.split("\n").find((line) => line.startsWith("import "))
  assert.equal(firstImport, 'import "./core/v8-flags.ts"')
})
