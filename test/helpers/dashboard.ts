/**
 * The dashboard's test scene, shared by test/admin/dashboard.test.ts and scripts/screenshot-dashboard.ts: Portcullis
 * as a child process (main.ts wires the dashboard) with an echo backend, a backend that refuses connections, two
 * certificates (one close to expiry) and an admin token; known traffic; Chromium opened on the dashboard.
 */
import { X509Certificate } from "node:crypto"
import { mkdtempSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import tls from "node:tls"
import { type BrowserContext, chromium, type Page } from "playwright-core"
import { startEchoBackend, type TestBackend } from "./backends.ts"
import { type CertFiles, createPki, type Pki } from "./pki.ts"
import {
  type ChildPortcullis,
  type HeldPort,
  refusingPort,
  runningPorts,
  spawnPortcullis,
  writeTemp,
} from "./portcullis.ts"

export const CHROMIUM = "/usr/bin/chromium"
/** TESTING-TOOLS.md's flags for headless Chromium on these machines. */
export const CHROMIUM_ARGS = [
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
]
const DAY = 86_400_000
/** An SNI name with markup in it: the dashboard must show it as text (tls.connect sends it as given). */
export const HOSTILE_SNI = "<img src=x onerror=alert(1)>.evil.test"

export interface Scene {
  dir: string
  pki: Pki
  site: CertFiles
  soon: CertFiles
  token: string
  pc: ChildPortcullis
  web: number
  admin: number
  adminUrl: string
  /** days_left as the admin API computes it, by first name. */
  daysLeft(names: string): number
  close(): Promise<void>
}

/**
 * startScene runs Portcullis with the listener `web` (routes /down/ to a refusing backend) and a token admin API;
 * with `workers`, as a cluster primary with that many worker processes.
 */
export async function startScene(options: { workers?: number } = {}): Promise<Scene> {
  const dir = mkdtempSync(join(tmpdir(), "pc-dashboard-"))
  const pki = await createPki()
  const echo: TestBackend = await startEchoBackend("app")
  const dead: HeldPort = await refusingPort()
  const site = await pki.issue({ names: ["localhost", "www.example.test"] })
  const soon = await pki.issue({ names: ["soon.example.test"], notAfter: new Date(Date.now() + 5 * DAY + 3_600_000) })
  const token = "dashboard-test-token-0123456789"
  const tokenFile = writeTemp(dir, "admin.token", `${token}\n`)
  const config = writeTemp(
    dir,
    "portcullis.yaml",
    `
listeners:
  - name: web
    address: "127.0.0.1:0"
    tls:
      certificates: [{ cert: ${site.certPath}, key: ${site.keyPath} }, { cert: ${soon.certPath}, key: ${soon.keyPath} }]
      profile: intermediate
    routes:
      - { path_prefix: /down/, upstream: down }
      - { upstream: app }
upstreams:
  app:
    backends: ["127.0.0.1:${echo.port}"]
    health: { path: /hello, interval: 1s, rise: 1 }
  down: { backends: ["127.0.0.1:${dead.port}"], retries: 0, passive: { enabled: false } }
admin: { address: "127.0.0.1:0", token_file: ${tokenFile} }
access_log: { enabled: false }
${options.workers ? `cluster: { workers: ${options.workers} }\nshutdown_grace: 2s\n` : ""}`,
  )
  const pc = spawnPortcullis(["--config", config])
  let ports: Awaited<ReturnType<typeof runningPorts>>
  try {
    // A primary starts its workers first: on a busy machine that takes longer than one process.
    ports = await runningPorts(pc, options.workers ? 60_000 : undefined)
  } catch (err) {
    // No scene to close: stop the child and close what the scene opened here, or their handles keep the test
    // file's process alive (a whole `npm test` then waits on it).
    await pc.stop("SIGKILL")
    dead.close()
    await echo.close()
    await pki.close()
    throw err
  }
  return {
    dir,
    pki,
    site,
    soon,
    token,
    pc,
    web: ports.ports["web"]!,
    admin: ports.admin!,
    adminUrl: `http://127.0.0.1:${ports.admin}/`,
    daysLeft: (name) => {
      const files = name === "soon.example.test" ? soon : site
      return Math.floor((new Date(new X509Certificate(files.cert).validTo).getTime() - Date.now()) / DAY)
    },
    close: async () => {
      await pc.stop()
      dead.close()
      await echo.close()
      await pki.close()
    },
  }
}

/** request sends one HTTP/1.1 request on a new TLS connection; resolves with the status, session and reuse. */
export function request(
  scene: Scene,
  path: string,
  session?: Buffer,
  options: tls.ConnectionOptions = {},
): Promise<{ status: number; session: Buffer | undefined; reused: boolean }> {
  return new Promise((resolve, reject) => {
    let ticket: Buffer | undefined
    let reused = false
    let text = ""
    const socket = tls.connect(
      {
        host: "127.0.0.1",
        port: scene.web,
        servername: "localhost",
        ca: scene.pki.ca.cert,
        ALPNProtocols: ["http/1.1"],
        session,
        ...options,
      },
      () => {
        reused = socket.isSessionReused()
        socket.write(`GET ${path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n`)
      },
    )
    socket.on("session", (s: Buffer) => {
      ticket = s
    })
    socket.setEncoding("utf8")
    socket.on("data", (d: string) => {
      text += d
    })
    socket.on("error", reject)
    socket.on("end", () => {
      socket.destroy()
      resolve({ status: Number(/^HTTP\/1\.1 (\d{3})/.exec(text)?.[1] ?? 0), session: ticket, reused })
    })
  })
}

/** refusedHandshake offers only a cipher the intermediate profile refuses, with SNI `servername`. */
export function refusedHandshake(scene: Scene, servername: string): Promise<void> {
  return new Promise((resolve) => {
    const socket = tls.connect({
      host: "127.0.0.1",
      port: scene.web,
      servername,
      ca: scene.pki.ca.cert,
      maxVersion: "TLSv1.2",
      ciphers: "AES128-SHA",
    })
    socket.on("error", () => resolve())
    socket.on("close", () => resolve())
  })
}

/** Counts driveTraffic sends, for assertions. */
export interface Traffic {
  full: number
  resumed: number
  notFound: number
  badGateway: number
  refused: number
}

/** driveTraffic sends a known mix: full and resumed handshakes with 200s, 404s, 502s and refused handshakes. */
export async function driveTraffic(scene: Scene, scale = 1): Promise<Traffic> {
  const t: Traffic = { full: 0, resumed: 0, notFound: 0, badGateway: 0, refused: 0 }
  const first = await request(scene, "/hello")
  t.full++
  for (let i = 0; i < 3 * scale; i++) {
    const r = await request(scene, "/hello", first.session)
    if (r.reused) t.resumed++
    else t.full++
  }
  for (let i = 0; i < 2 * scale; i++) {
    await request(scene, "/hello")
    t.full++
  }
  for (let i = 0; i < scale; i++) {
    if ((await request(scene, "/status/404")).status === 404) t.notFound++
    t.full++
    if ((await request(scene, "/down/x")).status === 502) t.badGateway++
    t.full++
  }
  await refusedHandshake(scene, HOSTILE_SNI)
  t.refused++
  return t
}

export interface Browser {
  context: BrowserContext
  page: Page
  /** console errors, page errors, failed requests and HTTP errors seen so far */
  problems: string[]
  close(): Promise<void>
}

/** openDashboard opens the dashboard in headless Chromium, sending the admin token with every request. */
export async function openDashboard(
  scene: Scene,
  viewport: { width: number; height: number } = { width: 1280, height: 900 },
): Promise<Browser> {
  const profile = mkdtempSync(join(tmpdir(), "pc-chromium-"))
  const context = await chromium.launchPersistentContext(profile, {
    headless: true,
    executablePath: CHROMIUM,
    args: CHROMIUM_ARGS,
    viewport,
    extraHTTPHeaders: { authorization: `Bearer ${scene.token}` },
  })
  const page = context.pages()[0] ?? (await context.newPage())
  const problems: string[] = []
  page.on("console", (m) => {
    if (m.type() === "error" || m.type() === "warning") problems.push(`console ${m.type()}: ${m.text()}`)
  })
  page.on("pageerror", (err) => problems.push(`page error: ${err.message}`))
  page.on("requestfailed", (r) => problems.push(`request failed: ${r.url()} ${r.failure()?.errorText}`))
  page.on("response", (r) => {
    if (r.status() >= 400) problems.push(`HTTP ${r.status()}: ${r.url()}`)
  })
  await page.goto(scene.adminUrl)
  return { context, page, problems, close: () => context.close() }
}
