/**
 * A drain that comes while a worker is still starting (issue 12): SIGTERM during a rolling restart, or while a
 * crashed worker's replacement starts. That worker is told to stop too: it never serves, no worker outlives the
 * primary, and the restart does not go on to the next slot. A restart while a replacement starts supersedes the
 * replacement. The worker is held in its start by a certificate file that is a FIFO (its start reads it; nothing
 * else does), so the test knows it is starting, without a timer.
 */
import assert from "node:assert/strict"
import { execFileSync } from "node:child_process"
import { closeSync, constants, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync, writeSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { test } from "node:test"
import { startEchoBackend } from "../helpers/backends.ts"
import { createPki } from "../helpers/pki.ts"
import { runningPorts, spawnPortcullis, writeTemp } from "../helpers/portcullis.ts"
import { openWriter, tagged } from "./held-start.ts"
import { isAlive } from "./takeover-harness.ts"
import { clusterYaml } from "./workers-harness.ts"
import { waitUntilAsync } from "./workers-wait.ts"

/** What a test gets from withHeldCluster. */
interface HeldCluster {
  tag: string
  site: { certPath: string }
  pc: ReturnType<typeof spawnPortcullis>
  status: () => Promise<{ workers: { pid: number | null; ready: boolean }[] }>
  /** The two workers serving when the test begins. */
  first: number[]
  primary: number
  /** The certificate the FIFO now stands in for. */
  pem: Buffer
}

/**
 * withHeldCluster starts a two-worker cluster, waits for both workers, then puts a FIFO where the certificate was,
 * so the next worker that starts blocks reading it; runs the test, then stops every tagged process and cleans up.
 */
async function withHeldCluster(label: string, run: (c: HeldCluster) => Promise<void>): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), "pc-drain-start-"))
  const pki = await createPki()
  const echo = await startEchoBackend("echo")
  const tag = `${process.pid}-${label}-${Date.now()}`
  try {
    const site = await pki.issue({ names: ["localhost"] })
    const yaml = clusterYaml({ ...site, upstream: "echo", upstreams: { echo: echo.port }, workers: 2, grace: "1s" })
    const file = writeTemp(dir, "portcullis.yaml", yaml)
    const pc = spawnPortcullis(["--config", file], { env: { PORTCULLIS_LOG_LEVEL: "info", PORTCULLIS_TEST_TAG: tag } })
    const { admin } = await runningPorts(pc, 60_000)
    const status = async () =>
      (await (await fetch(`http://127.0.0.1:${admin}/status`)).json()) as {
        workers: { pid: number | null; ready: boolean }[]
      }
    await waitUntilAsync(async () => (await status()).workers.every((w) => w.ready), "both workers ready", 30_000)
    const first = (await status()).workers.map((w) => w.pid!)
    const primary = pc.child.pid!
    const pem = readFileSync(site.certPath)
    rmSync(site.certPath)
    execFileSync("mkfifo", [site.certPath])
    await run({ tag, site, pc, status, first, primary, pem })
  } finally {
    for (const pid of tagged(tag)) if (isAlive(pid)) process.kill(pid, "SIGKILL")
    await echo.close()
    await pki.close()
    rmSync(dir, { recursive: true, force: true })
  }
}

for (const trigger of ["restart", "replacement"] as const) {
  test(`SIGTERM while a worker starts (${trigger}): it never serves and no worker outlives the primary`, async () => {
    await withHeldCluster(trigger, async ({ tag, site, pc, first, primary, pem }) => {
      // From now on a worker that starts blocks reading its certificate until the test writes it.
      if (trigger === "restart") pc.child.kill("SIGUSR2")
      else process.kill(first[0]!, "SIGKILL")
      const fifo = await openWriter(site.certPath, 30_000)
      const starting = tagged(tag).filter((pid) => pid !== primary && !first.includes(pid))
      assert.equal(starting.length, 1, `one worker starting: ${starting.join(",")}`)
      const exited = pc.stop("SIGTERM")
      await pc.waitFor(/SIGTERM: stopping/, 10_000)
      const drainedAt = pc.output().length
      // The starting worker gets its certificate only now, after the primary said it drains.
      writeSync(fifo, pem)
      closeSync(fifo)
      const code = await exited
      const left = tagged(tag)
      for (const pid of left) if (isAlive(pid)) process.kill(pid, "SIGKILL")
      const after = pc.output().slice(drainedAt)
      assert.equal(code, 0, pc.output())
      assert.deepEqual(left, [], `no worker outlives the primary:\n${after}`)
      assert.doesNotMatch(after, /"worker ready"/, "the starting worker was never made a serving one")
      assert.doesNotMatch(after, new RegExp(`"pid":${starting[0]},[^\\n]*"msg":"started"`), "it never served")
      assert.match(after, /worker stopped before it served|worker stopping/)
      if (trigger === "restart") assert.doesNotMatch(after, /"workers restarted"/)
    })
  })
}

test("a restart while a crashed worker's replacement starts supersedes it: its end is no crash, one worker per slot", async () => {
  await withHeldCluster("supersede", async ({ tag, site, pc, status, first, primary, pem }) => {
    // The replacement reads a FIFO the test holds open: it waits in that read until the test closes it (then EOF).
    const held = openSync(site.certPath, constants.O_RDWR)
    process.kill(first[0]!, "SIGKILL")
    let replacement = 0
    await waitUntilAsync(
      async () => {
        replacement = tagged(tag).find((pid) => pid !== primary && !first.includes(pid)) ?? 0
        return replacement !== 0
      },
      "the replacement forked",
      30_000,
    )
    process.kill(replacement, "SIGSTOP")
    // Every later start reads a plain file; the stopped replacement gets EOF (an empty certificate) when resumed.
    rmSync(site.certPath)
    writeFileSync(site.certPath, pem)
    closeSync(held)
    const restarted = pc.waitFor(/"workers restarted"/, 60_000)
    pc.child.kill("SIGUSR2")
    await restarted
    process.kill(replacement, "SIGCONT")
    await waitUntilAsync(async () => !isAlive(replacement), "the superseded replacement exits", 15_000)
    // Only the restart's two workers are left (the old worker 1 drained in its grace); nothing replaced the
    // superseded one.
    await waitUntilAsync(async () => tagged(tag).length === 3, "the primary and two workers", 15_000)
    const now = await status()
    assert.ok(
      now.workers.every((w) => w.ready && w.pid !== replacement && !first.includes(w.pid!)),
      JSON.stringify(now),
    )
    assert.deepEqual(
      tagged(tag)
        .filter((pid) => pid !== primary)
        .sort(),
      now.workers.map((w) => w.pid!).sort(),
    )
    assert.doesNotMatch(pc.output(), new RegExp(`"pid":${replacement},[^\\n]*replacing it`), "its end was no crash")
    assert.equal(await pc.stop("SIGTERM"), 0)
  })
})
