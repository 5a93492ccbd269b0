/** Helpers for tests that hold a process in its start with a FIFO (its start reads it; nothing else does). */
import { constants, openSync, readdirSync, readFileSync } from "node:fs"

/** tagged lists the processes whose environment carries this test's tag (the primary and every worker it forked). */
export function tagged(tag: string): number[] {
  const out: number[] = []
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue
    try {
      if (readFileSync(`/proc/${entry}/environ`, "latin1").includes(`PORTCULLIS_TEST_TAG=${tag}\0`)) {
        out.push(Number(entry))
      }
    } catch {
      // gone meanwhile, or not ours to read
    }
  }
  return out
}

/** openWriter opens the FIFO for writing once a reader has it open (ENXIO until then), within timeoutMs. */
export async function openWriter(path: string, timeoutMs: number): Promise<number> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    try {
      return openSync(path, constants.O_WRONLY | constants.O_NONBLOCK)
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "ENXIO" || Date.now() > deadline) throw err
    }
    await new Promise((r) => setTimeout(r, 20))
  }
}
