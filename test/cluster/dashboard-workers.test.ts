/**
 * The live dashboard of a cluster (cluster.workers: 2) in headless Chromium: its data is the workers' snapshots
 * added up by the primary, so after known traffic every chart has data, the certificates, backends, recent
 * failures and census panels are filled, and the page logs no error (test/admin/dashboard.test.ts is the one-process
 * original of this scene).
 */
import assert from "node:assert/strict"
import { existsSync } from "node:fs"
import { after, before, test } from "node:test"
import { CHROMIUM, driveTraffic, HOSTILE_SNI, openDashboard, type Scene, startScene } from "../helpers/dashboard.ts"
import { waitUntilAsync } from "./workers-wait.ts"

type Charts = Record<string, { series: string[]; data: (number | null)[][] } | null>
type Hook = { portcullisDashboard: { polls: number; charts(): Charts } }

let scene: Scene
const skip = existsSync(CHROMIUM) ? false : `${CHROMIUM} is missing (apt-get install -y chromium)`

before(async () => {
  scene = await startScene({ workers: 2 })
  // Both workers serve (GET /readyz is 200 only then).
  await waitUntilAsync(
    async () => (await fetch(`${scene.adminUrl}readyz`, { headers: auth() })).status === 200,
    "both workers ready",
    60_000,
  )
})

after(async () => {
  await scene?.close()
})

const auth = () => ({ authorization: `Bearer ${scene.token}` })

test("with two workers every chart and panel has the group's data, and the page logs no error", { skip }, async () => {
  const browser = await openDashboard(scene)
  const { page, problems } = browser
  try {
    await page.waitForFunction(() => (window as unknown as Hook).portcullisDashboard.polls >= 2, undefined, {
      timeout: 15_000,
    })
    const traffic = await driveTraffic(scene, 2)
    const wanted: Record<string, string[]> = {
      requests: ["all", "2xx", "4xx", "5xx"],
      handshakes: ["full", "failed"],
      failures: ["no_shared_cipher"],
      latency: ["app"],
    }
    await page.waitForFunction(
      (want) => {
        const charts = (window as unknown as Hook).portcullisDashboard.charts()
        return Object.entries(want).every(([name, labels]) => {
          const c = charts[name]
          return c && labels.every((label) => c.data[c.series.indexOf(label) + 1]?.some((v) => (v ?? 0) > 0))
        })
      },
      wanted,
      { timeout: 20_000 },
    )
    // The totals the page polls are the group's: every handshake of the traffic, from both workers' answers.
    const data = (await (await fetch(`${scene.adminUrl}dashboard/data`, { headers: auth() })).json()) as {
      handshakes: { full: number; resumed: number }
      workers: { answered: unknown[]; missing: unknown[] }
    }
    assert.equal(data.handshakes.full + data.handshakes.resumed, traffic.full + traffic.resumed)
    assert.deepEqual([data.workers.answered.length, data.workers.missing.length], [2, 0])
    const rows = await page.locator("#certificates .row").count()
    assert.equal(rows, 2, "both certificates listed")
    assert.equal(
      await page.locator("#recent-failures tbody tr").first().locator("td").nth(3).textContent(),
      HOSTILE_SNI,
    )
    assert.match((await page.locator("#t-up").textContent()) ?? "", /^2\/2$/)
    assert.equal(await page.locator("#census").isVisible(), true)
    assert.match((await page.locator("#census").textContent()) ?? "", /web · \d+ recent clients/)
    assert.deepEqual(problems, [], "no console errors, failed requests or HTTP errors")
  } finally {
    await browser.close()
  }
})
