/**
 * Regenerates docs/dashboard.png (the README's picture): Portcullis with a backend, a refusing backend and two
 * certificates, about 30 s of mixed traffic (full and resumed handshakes, 404s, 502s, refused handshakes) while the
 * dashboard is open in headless Chromium, then a screenshot of the whole page.
 *
 *   node scripts/screenshot-dashboard.ts [OUT.png] [--seconds N] [--phone]
 */
import { resolve } from "node:path"
import type tls from "node:tls"
import { driveTraffic, openDashboard, request, startScene } from "../test/helpers/dashboard.ts"

const args = process.argv.slice(2)
const phone = args.includes("--phone")
const secondsAt = args.indexOf("--seconds")
const seconds = secondsAt >= 0 ? Number(args[secondsAt + 1]) : 30
const out = resolve(args.find((a) => a.endsWith(".png")) ?? (phone ? "docs/dashboard-phone.png" : "docs/dashboard.png"))

const MIX: tls.ConnectionOptions[] = [
  { maxVersion: "TLSv1.2", ciphers: "ECDHE-ECDSA-AES128-GCM-SHA256" },
  { maxVersion: "TLSv1.2", ciphers: "ECDHE-ECDSA-CHACHA20-POLY1305" },
  { ciphers: "TLS_CHACHA20_POLY1305_SHA256" },
  { ciphers: "TLS_AES_256_GCM_SHA384" },
]

const scene = await startScene()
const browser = await openDashboard(scene, phone ? { width: 390, height: 844 } : { width: 1400, height: 900 })
try {
  // A wave: some rounds busier than others, so the charts show a shape rather than a flat line. The traffic goes on
  // while the screenshot is taken, so the tiles show rates, not the zeros after it stopped.
  let stop = false
  const traffic = (async () => {
    for (let round = 1; !stop; round++) {
      const burst = 1 + Math.round(2 + 2 * Math.sin(round / 3))
      await driveTraffic(scene, burst)
      for (let i = 0; i < burst * 3 && !stop; i++) await request(scene, "/hello")
      // Some TLS 1.2 clients and another TLS 1.3 cipher, so the version and cipher mix has more than one bar.
      for (const options of MIX) await request(scene, "/hello", undefined, options)
    }
  })()
  await new Promise((r) => setTimeout(r, seconds * 1000))
  await browser.page.screenshot({ path: out, fullPage: true })
  stop = true
  await traffic
  console.log(`wrote ${out}`)
  if (browser.problems.length) console.log(`browser problems:\n${browser.problems.join("\n")}`)
} finally {
  await browser.close()
  await scene.close()
}
