/**
 * SIGTERM before the start is done (systemd stopping a unit that is still coming up): the process keeps the signal
 * and stops gracefully once its start is done, a primary with its workers, rather than dying on Node's default
 * action. The start is held by a config file that is a FIFO: the process reads it first thing, and blocks there until
 * the test writes it, so the signal lands while it starts, without a timer.
 */
import assert from "node:assert/strict"
import { execFileSync } from "node:child_process"
import { closeSync, mkdtempSync, rmSync, writeSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { test } from "node:test"
import { startEchoBackend } from "../helpers/backends.ts"
import { createPki } from "../helpers/pki.ts"
import { spawnPortcullis } from "../helpers/portcullis.ts"
import { openWriter, tagged } from "./held-start.ts"
import { isAlive } from "./takeover-harness.ts"
import { clusterYaml } from "./workers-harness.ts"

for (const workers of [1, 2]) {
  test(`SIGTERM while starting (cluster.workers ${workers}): the start finishes, then a graceful stop, exit 0, no process left`, async () => {
    const dir = mkdtempSync(join(tmpdir(), "pc-sigterm-start-"))
    const pki = await createPki()
    const echo = await startEchoBackend("echo")
    const tag = `${process.pid}-sigterm-start-${workers}-${Date.now()}`
    try {
      const site = await pki.issue({ names: ["localhost"] })
      const file = join(dir, "portcullis.yaml")
      execFileSync("mkfifo", [file])
      const pc = spawnPortcullis(["--config", file], {
        env: { PORTCULLIS_LOG_LEVEL: "info", PORTCULLIS_TEST_TAG: tag },
      })
      const exited = new Promise<number | null>((r) => pc.child.once("exit", (code) => r(code)))
      // The process has the config open for reading: it is in its start, its signal handlers set.
      const fifo = await openWriter(file, 30_000)
      pc.child.kill("SIGTERM")
      writeSync(fifo, clusterYaml({ ...site, upstream: "echo", upstreams: { echo: echo.port }, workers, grace: "1s" }))
      closeSync(fifo)
      const code = await Promise.race([exited, new Promise((r) => setTimeout(() => r("still running"), 30_000))])
      const left = tagged(tag).filter(isAlive)
      for (const pid of left) process.kill(pid, "SIGKILL")
      assert.equal(code, 0, pc.output())
      assert.deepEqual(left, [], `no process outlives the stop:\n${pc.output()}`)
      const out = pc.output()
      // The stop comes after the start: logged as kept ("SIGTERM while starting") when the event loop had a turn
      // during the start, else the signal reaches JavaScript only after it, as an ordinary stop.
      // By the lines' own times: under load the two pipes (stdout, stderr) may reach the test out of order.
      const at = (msg: RegExp) => {
        const line = out.split("\n").find((l) => msg.test(l))
        return line === undefined ? Number.NaN : (JSON.parse(line) as { time: number }).time
      }
      const running = at(/"msg":"portcullis is running"/)
      const stopping = at(/"msg":"SIGTERM: stopping/)
      assert.ok(running <= stopping, `started (${running}), then stopped (${stopping}):\n${out}`)
      if (workers > 1) assert.match(out, /worker stopping/)
    } finally {
      for (const pid of tagged(tag)) if (isAlive(pid)) process.kill(pid, "SIGKILL")
      await echo.close()
      await pki.close()
      rmSync(dir, { recursive: true, force: true })
    }
  })
}
