/** testssl.sh -p -s -P -U against the modern profile (one file per profile, so the two run in parallel). */
import assert from "node:assert/strict"
import { test } from "node:test"
import { problems, runTestssl } from "./testssl.ts"

test("testssl finds nothing HIGH, no old protocol and no weak cipher list in the modern profile", {
  timeout: 330_000,
}, async () => {
  const findings = await runTestssl("modern")
  assert.deepEqual(problems(findings), [])
})
