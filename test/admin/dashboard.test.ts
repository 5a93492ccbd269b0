/**
 * The live dashboard at GET / of the admin address (issue 13, item 2), in headless Chromium: after known traffic
 * every chart has data, a certificate row shows its days left, an SNI name with markup shows as text, no console
 * error or failed request; the page and its data need the admin token; one snapshot a second serves every viewer;
 * the census panel shows when a census is there and hides when not. Screenshots are kept in the test's temp dir.
 */
import assert from "node:assert/strict"
import { existsSync, readFileSync } from "node:fs"
import http from "node:http"
import { createRequire } from "node:module"
import type { AddressInfo } from "node:net"
import { join } from "node:path"
import { after, before, describe, test } from "node:test"
import { chromium } from "playwright-core"
import { AdminApi } from "../../src/admin/api.ts"
import { CONTENT_SECURITY_POLICY, Dashboard } from "../../src/admin/dashboard/dashboard.ts"
import { DashboardFeed, dashboardData } from "../../src/admin/dashboard/data.ts"
import { silentLogger } from "../../src/core/log.ts"
import { RuntimeState } from "../../src/state/runtime-state.ts"
import {
  CHROMIUM,
  CHROMIUM_ARGS,
  driveTraffic,
  HOSTILE_SNI,
  openDashboard,
  request,
  type Scene,
  startScene,
} from "../helpers/dashboard.ts"
import { parsePrometheus, value } from "../helpers/prometheus.ts"

/** What the page exposes for tests: each chart's series labels and its uPlot data columns (x first). */
type Charts = Record<string, { series: string[]; data: (number | null)[][] } | null>
type Hook = { portcullisDashboard: { polls: number; charts(): Charts } }

let scene: Scene
const skip = existsSync(CHROMIUM) ? false : `${CHROMIUM} is missing (apt-get install -y chromium)`

before(async () => {
  scene = await startScene()
})

after(async () => {
  await scene?.close()
})

const auth = () => ({ authorization: `Bearer ${scene.token}` })

describe("GET / on the admin address, with admin.token_file", () => {
  test("the page, its assets and /dashboard/data answer 401 without the token and 200 with it", async () => {
    for (const path of ["/", "/dashboard/data", "/assets/dashboard.js", "/assets/uPlot.iife.min.js"]) {
      const url = `http://127.0.0.1:${scene.admin}${path}`
      assert.equal((await fetch(url)).status, 401, `${path} without a token`)
      assert.equal((await fetch(url, { headers: { authorization: "Bearer wrong" } })).status, 401, `${path} wrong`)
      const ok = await fetch(url, { headers: auth() })
      assert.equal(ok.status, 200, `${path} with the token`)
      await ok.arrayBuffer()
    }
  })

  test("the page is served with a Content-Security-Policy and has no inline script, style or handler", async () => {
    const res = await fetch(scene.adminUrl, { headers: auth() })
    assert.equal(res.headers.get("content-type"), "text/html; charset=utf-8")
    assert.equal(res.headers.get("content-security-policy"), CONTENT_SECURITY_POLICY)
    assert.match(CONTENT_SECURITY_POLICY, /script-src 'self'(;|$)/)
    assert.match(CONTENT_SECURITY_POLICY, /default-src 'none'/)
    assert.equal(res.headers.get("x-content-type-options"), "nosniff")
    const html = await res.text()
    const scripts = html.match(/<script\b[^>]*>/g) ?? []
    assert.equal(scripts.length, 2)
    for (const s of scripts) assert.match(s, /\bsrc="assets\//, `${s} loads a file of ours`)
    assert.doesNotMatch(html, /<script\b[^>]*>[^<]+<\/script>/, "no inline script")
    assert.doesNotMatch(html, /\sstyle=|<style\b|\son[a-z]+=/i, "no inline style or event handler")
    assert.doesNotMatch(html, /https?:\/\//, "nothing from another origin")
    // uPlot comes from its npm package, byte for byte.
    const uplot = join(createRequire(import.meta.url).resolve("uplot/package.json"), "../dist/uPlot.iife.min.js")
    const served = await fetch(`http://127.0.0.1:${scene.admin}/assets/uPlot.iife.min.js`, { headers: auth() })
    assert.deepEqual(Buffer.from(await served.arrayBuffer()), readFileSync(uplot))
  })

  test("a 502 from a refused backend counts as a backend error, in /metrics and in /dashboard/data", async () => {
    const read = async () => {
      const metrics = parsePrometheus(
        await (await fetch(`http://127.0.0.1:${scene.admin}/metrics`, { headers: auth() })).text(),
      )
      return value(metrics, "portcullis_backend_errors_total", { upstream: "down", kind: "connect" })
    }
    const before = await read().catch(() => 0)
    for (let i = 0; i < 3; i++) assert.equal((await request(scene, "/down/x")).status, 502)
    assert.equal(await read(), before + 3)
    // The feed's snapshot is at most a second old: wait for one that has the three errors.
    const deadline = Date.now() + 5_000
    let errors = -1
    while (Date.now() < deadline) {
      const d = (await (await fetch(`http://127.0.0.1:${scene.admin}/dashboard/data`, { headers: auth() })).json()) as {
        backend_errors: Record<string, number>
        upstreams: { name: string; backends: { errors: number }[] }[]
      }
      errors = d.upstreams.find((u) => u.name === "down")!.backends[0]!.errors
      if (errors === before + 3) {
        assert.equal(d.backend_errors["connect"], before + 3)
        break
      }
      await new Promise((r) => setTimeout(r, 200))
    }
    assert.equal(errors, before + 3)
  })
})

describe("the dashboard in headless Chromium", () => {
  test("after known traffic: every chart has data, days left per certificate, SNI as text, no errors", {
    skip,
  }, async () => {
    const browser = await openDashboard(scene)
    const { page, problems } = browser
    try {
      await page.waitForFunction(() => (window as unknown as Hook).portcullisDashboard.polls >= 2, undefined, {
        timeout: 15_000,
      })
      const traffic = await driveTraffic(scene, 2)
      assert.ok(traffic.resumed >= 4, `resumed handshakes: ${traffic.resumed}`)
      assert.equal(traffic.notFound, 2)
      assert.equal(traffic.badGateway, 2)
      // Every series the traffic feeds must have shown a rate above zero at some point in the window.
      const wanted: Record<string, string[]> = {
        requests: ["all", "2xx", "4xx", "5xx"],
        errors: ["4xx", "5xx", "backend errors"],
        handshakes: ["full", "resumed", "failed"],
        failures: ["no_shared_cipher"],
        latency: ["app"],
      }
      await page.waitForFunction(
        (want) => {
          const charts = (window as unknown as Hook).portcullisDashboard.charts()
          return Object.entries(want).every(([name, labels]) => {
            const c = charts[name]
            return (
              c &&
              labels.every((label) => {
                const col = c.data[c.series.indexOf(label) + 1]
                return col?.some((v) => typeof v === "number" && v > 0)
              })
            )
          })
        },
        wanted,
        { timeout: 20_000 },
      )
      const charts = await page.evaluate(() => (window as unknown as Hook).portcullisDashboard.charts())
      for (const [name, c] of Object.entries(charts)) {
        assert.ok(c, `chart ${name} is drawn`)
        assert.ok(c.data[0]!.length >= 2, `chart ${name} has points`)
        assert.equal(c.data.length, c.series.length + 1)
        assert.ok(
          c.data.slice(1).some((col) => col.some((v) => typeof v === "number")),
          `chart ${name} has numbers`,
        )
        // Drawn, not only held: uPlot draws into a canvas the size of its box.
        const box = await page.locator(`[data-chart="${name}"] canvas`).boundingBox()
        assert.ok(box && box.width > 100 && box.height > 100, `chart ${name} canvas ${JSON.stringify(box)}`)
      }

      // Certificates: one row each, days left as the admin API counts them, the one near expiry in red.
      const rows = await page.locator("#certificates .row").evaluateAll((els) =>
        els.map((e) => ({
          name: e.querySelector(".name .mono")!.textContent,
          days: e.querySelector(".days")!.textContent,
          tone: e.querySelector(".days")!.className,
        })),
      )
      assert.deepEqual(rows, [
        { name: "soon.example.test", days: `${scene.daysLeft("soon.example.test")} d`, tone: "days bad" },
        { name: "localhost, www.example.test", days: `${scene.daysLeft("localhost")} d`, tone: "days ok" },
      ])
      assert.equal(scene.daysLeft("soon.example.test"), 5)

      // The refused handshake's SNI is listed as the text it was, and made no element.
      const sni = await page.locator("#recent-failures tbody tr").first().locator("td").nth(3).textContent()
      assert.equal(sni, HOSTILE_SNI)
      assert.equal(await page.locator("#recent-failures img").count(), 0)
      assert.equal(await page.locator("#failure-reasons tbody td").first().textContent(), "no_shared_cipher")

      // Tiles: numbers with units; the backends table shows both upstreams, the refusing one with its errors.
      assert.match((await page.locator("#t-expiry").textContent()) ?? "", /^5 d$/)
      assert.match((await page.locator("#t-up").textContent()) ?? "", /^2\/2$/)
      const down = page.locator("#backends tbody tr", { hasText: "down" })
      assert.ok(Number(await down.locator("td").nth(4).textContent()) >= 2, "the refusing backend's errors")
      const app = page.locator("#backends tbody tr", { hasText: "app" })
      assert.match((await app.locator("td").nth(5).textContent()) ?? "", /^\d+(\.\d)? ms$/, "the backend's mean")
      assert.match((await app.locator("td").nth(6).textContent()) ?? "", /^\d+(\.\d)? ms \/ \d+(\.\d)? ms$/)
      assert.match((await app.locator("td").nth(7).textContent()) ?? "", /^ok · \d/)
      assert.equal(await down.locator("td").nth(5).textContent(), "no responses")
      assert.match((await page.locator("#versions").textContent()) ?? "", /TLSv1\.3/)
      // No cluster.store: the fleet panel says so. The census (GET /tls/clients) shows the listener's clients.
      assert.match((await page.locator("#instances").textContent()) ?? "", /No cluster\.store configured/)
      assert.equal(await page.locator("#census").isVisible(), true)
      assert.match((await page.locator("#census").textContent()) ?? "", /web · \d+ recent clients/)
      assert.equal(await page.locator("#census .bar", { hasText: "modern" }).count(), 1)

      const wide = join(scene.dir, "dashboard.png")
      await page.screenshot({ path: wide, fullPage: true })
      console.log(`# dashboard screenshot: ${wide}`)

      // A phone (390×844): one column, nothing wider than the screen, charts resized to fit.
      await page.setViewportSize({ width: 390, height: 844 })
      await page.waitForFunction(
        () => [...document.querySelectorAll(".chart canvas")].every((c) => c.getBoundingClientRect().width <= 390),
        undefined,
        { timeout: 5_000 },
      )
      assert.ok((await page.evaluate(() => document.documentElement.scrollWidth)) <= 390, "no sideways scroll")
      const phone = join(scene.dir, "dashboard-phone.png")
      await page.screenshot({ path: phone, fullPage: true })
      console.log(`# phone screenshot: ${phone}`)

      assert.deepEqual(problems, [], "no console errors, failed requests or HTTP errors")
    } finally {
      await browser.close()
    }
  })
})

describe("the dashboard's data endpoint", () => {
  test("one snapshot a second, shared by every viewer: 20 polls at once build it once", async () => {
    let builds = 0
    const state = new RuntimeState()
    const api = new AdminApi(
      { host: "127.0.0.1", port: 0 },
      {
        status: () => ({}),
        reload: async () => {},
        drain: () => {},
        dashboard: () => {
          builds++
          return dashboardData({ state, generation: undefined })
        },
      },
      silentLogger(),
    )
    await api.start()
    try {
      const bodies = await Promise.all(
        Array.from({ length: 20 }, async () => {
          const res = await fetch(`http://127.0.0.1:${api.port}/dashboard/data`)
          assert.equal(res.headers.get("cache-control"), "no-store")
          return res.text()
        }),
      )
      assert.equal(builds, 1)
      assert.equal(new Set(bodies).size, 1)
    } finally {
      await api.close()
    }
    const feed = new DashboardFeed(() => ({ at: Math.random() }), 1000)
    const a = feed.text(10_000)
    assert.equal(feed.text(10_999), a)
    assert.notEqual(feed.text(11_000), a)
    assert.equal(feed.builds, 2)
  })
})

describe("the browser's window", () => {
  test("the charts keep at most 300 points (5 minutes at one a second) however long the page is open", {
    skip,
  }, async () => {
    // The page's clock is Playwright's, so its one-second timer is run forward instead of waited for; the data
    // says a second passed at every poll (a feed without the shared second, and a snapshot time that counts up).
    const state = new RuntimeState()
    let second = 1_700_000_000
    const dashboard = new Dashboard(() => dashboardData({ state, generation: undefined }, ++second * 1000), 0)
    const server = http.createServer((req, res) => {
      if (!dashboard.serve(req, res, new URL(req.url ?? "/", "http://x").pathname)) res.writeHead(404).end()
    })
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r))
    const context = await chromium.launchPersistentContext(join(scene.dir, "window-profile"), {
      headless: true,
      executablePath: CHROMIUM,
      args: CHROMIUM_ARGS,
    })
    try {
      const page = context.pages()[0] ?? (await context.newPage())
      await page.clock.install()
      await page.goto(`http://127.0.0.1:${(server.address() as AddressInfo).port}/`)
      const polls = () => page.evaluate(() => (window as unknown as Hook).portcullisDashboard.polls)
      const deadline = Date.now() + 60_000
      for (let n = 0; (n % 20 !== 0 || (await polls()) < 320) && Date.now() < deadline; n++) {
        await page.clock.runFor(1_000)
      }
      assert.ok((await polls()) >= 320, `${await polls()} polls in 60 s`)
      const charts = await page.evaluate(() => (window as unknown as Hook).portcullisDashboard.charts())
      assert.equal(charts["requests"]!.data[0]!.length, 300)
      for (const col of charts["requests"]!.data) assert.equal(col.length, 300)
    } finally {
      await context.close()
      server.closeAllConnections()
      await new Promise((r) => server.close(r))
    }
  })
})

describe("the census panel", () => {
  /** The shape GET /tls/clients answers (the census, issue 13 item 5). */
  const census = {
    listeners: {
      web: {
        clients: 8,
        versions: { "TLSv1.3": 6, "TLSv1.2": 8 },
        groups: { X25519MLKEM768: 4, x25519: 8, secp256r1: 7 },
        ciphers: { TLS_AES_128_GCM_SHA256: 6, "ECDHE-ECDSA-AES128-GCM-SHA256": 8 },
        sigalgs: { ecdsa_secp256r1_sha256: 8, rsa_pss_rsae_sha256: 8 },
        whatif: {
          modern: { refused: 2, reasons: { no_shared_version: 2 } },
          intermediate: { refused: 0 },
          old: { refused: 0 },
          current: { refused: 0, unjudged: ["ciphers keyword HIGH"] },
        },
      },
    },
  }

  /** A fleet store's status as /status shows it (FleetStore.status()): this instance and one other. */
  const now = new Date().toISOString()
  const fleet = {
    id: "pc-a",
    connected: true,
    read_at: now,
    instances: [
      { id: "pc-a", version: "0.1.0", pid: 11, addresses: { web: "10.0.0.1:443" }, status: "serving", updated_at: now },
      {
        id: "pc-b",
        version: "0.1.0",
        pid: 12,
        addresses: { web: "10.0.0.2:443" },
        status: "draining",
        updated_at: now,
      },
    ],
  }

  test("with a census it shows per listener shares and what each profile would refuse; fleet instances", {
    skip,
  }, async () => {
    const state = new RuntimeState()
    const api = new AdminApi(
      { host: "127.0.0.1", port: 0 },
      {
        status: () => ({}),
        reload: async () => {},
        drain: () => {},
        dashboard: () => dashboardData({ state, generation: undefined, census: () => census, instances: () => fleet }),
      },
      silentLogger(),
    )
    await api.start()
    const context = await chromium.launchPersistentContext(join(scene.dir, "census-profile"), {
      headless: true,
      executablePath: CHROMIUM,
      args: CHROMIUM_ARGS,
    })
    try {
      const page = context.pages()[0] ?? (await context.newPage())
      const problems: string[] = []
      page.on("console", (m) => {
        if (m.type() === "error") problems.push(m.text())
      })
      page.on("pageerror", (err) => problems.push(err.message))
      await page.goto(`http://127.0.0.1:${api.port}/`)
      await page.locator("#census .census-listener").waitFor({ timeout: 10_000 })
      assert.equal(await page.locator("#census").isVisible(), true)
      const text = (await page.locator("#census").textContent()) ?? ""
      assert.match(text, /web · 8 recent clients/)
      assert.match(text, /X25519MLKEM768/)
      const modern = page.locator("#census .bar", { hasText: "modern" })
      assert.equal(await modern.locator(".pct").textContent(), "25%")
      assert.match((await modern.locator(".fill").getAttribute("class")) ?? "", /\bbad\b/)
      assert.equal(await modern.getAttribute("title"), "2 of 8 (no_shared_version: 2)")
      assert.match(text, /current: not judged: ciphers keyword HIGH/)
      assert.equal(await page.locator("#census .bar", { hasText: "intermediate" }).locator(".pct").textContent(), "0%")
      const mlkem = page.locator("#census .bar", { hasText: "X25519MLKEM768" })
      assert.equal(await mlkem.locator(".pct").textContent(), "50%")
      // Empty states say what is missing: no upstreams, no certificates.
      assert.match((await page.locator("#backends").textContent()) ?? "", /No upstreams configured/)
      assert.match((await page.locator("#certificates").textContent()) ?? "", /no certificates/i)
      const instances = await page
        .locator("#instances tbody tr")
        .evaluateAll((rows) => rows.map((r) => [...r.querySelectorAll("td")].slice(0, 2).map((td) => td.textContent)))
      assert.deepEqual(instances, [
        ["pc-a (this one)", "serving"],
        ["pc-b", "draining"],
      ])
      await page.screenshot({ path: join(scene.dir, "dashboard-census.png"), fullPage: true })
      assert.deepEqual(problems, [])
    } finally {
      await context.close()
      await api.close()
    }
  })
})
