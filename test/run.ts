/** Runs every test file under test/ with node:test; refuses to pass when it finds none. */
import { spawnSync } from "node:child_process"
import { globSync } from "node:fs"

const pattern = process.argv[2] ?? "test/**/*.test.ts"
const files = globSync(pattern).sort()
if (files.length === 0) {
  console.error(`test/run.ts: no test files match ${pattern}`)
  process.exit(1)
}
const result = spawnSync(
  process.execPath,
  ["--test", "--test-concurrency=2", "--test-timeout=120000", "--test-reporter=spec", ...files],
  { stdio: "inherit" },
)
process.exit(result.status ?? 1)
