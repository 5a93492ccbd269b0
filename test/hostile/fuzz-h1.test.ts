/**
 * HTTP/1.1 fuzzer (issue 14): request heads and bodies mutated from valid templates (bytes flipped, inserted and
 * deleted; lines duplicated, dropped and swapped; tricky framing and Host fields added; cut short) against an
 * in-process Portcullis. Nothing may escape as an uncaught exception or unhandled rejection; every answer is a
 * well-formed HTTP/1.1 response or a closed connection; afterwards a normal request succeeds and RSS is bounded.
 * The seed is printed; PC_FUZZ_SEED repeats a run.
 */
import assert from "node:assert/strict"
import { test } from "node:test"
import { h2request, request } from "../helpers/clients.ts"
import { clientConnections, describeTrapped, fuzzSeed, memory, runCases, startFuzzTarget } from "./fuzz.ts"
import { h1Case } from "./fuzz-h1-cases.ts"

const CASES = Number(process.env.PC_FUZZ_CASES ?? 2_000)

test(`HTTP/1.1 fuzzer: ${CASES} mutated requests, no uncaught error, a request after succeeds`, async () => {
  const seed = fuzzSeed("h1 fuzzer")
  const target = await startFuzzTarget()
  try {
    const tls = { rejectUnauthorized: false }
    assert.equal((await request({ port: target.port, path: "/warm", tlsOptions: tls })).status, 200)
    const before = memory()
    await runCases(target, seed, CASES, 16, (rng, index) => h1Case(rng, target.port, index))
    assert.deepEqual(target.trapped, [], describeTrapped(seed, target.trapped))
    const after1 = await request({ port: target.port, path: "/after", tlsOptions: tls })
    const after2 = await h2request({ port: target.port, path: "/after", tlsOptions: tls })
    assert.equal(after1.status, 200)
    assert.equal(after2.status, 200)
    // Every fuzz connection is gone (none held by a stuck session), and what they used is freed.
    const deadline = Date.now() + 10_000
    while (clientConnections(target) > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50))
    assert.equal(clientConnections(target), 0, "client connections left open")
    const now = memory()
    console.log(
      `h1 fuzzer: ${CASES} cases, heap ${before.heap.toFixed(1)} -> ${now.heap.toFixed(1)} MiB, RSS ${before.rss.toFixed(1)} -> ${now.rss.toFixed(1)} MiB`,
    )
    // In-process: the figures include the fuzzing client; RSS also keeps what V8 and OpenSSL have not returned.
    assert.ok(now.heap - before.heap < 16, `heap grew ${(now.heap - before.heap).toFixed(1)} MiB (seed ${seed})`)
    assert.ok(now.rss - before.rss < 192, `RSS grew ${(now.rss - before.rss).toFixed(1)} MiB (seed ${seed})`)
  } finally {
    await target.close()
  }
})
