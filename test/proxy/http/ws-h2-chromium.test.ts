/**
 * Chromium opens a page through Portcullis over HTTP/2 and a WebSocket to the same origin: the WebSocket must ride the
 * page's h2 connection as an RFC 8441 extended CONNECT stream, not a second HTTP/1.1 connection.
 *
 * Driven by playwright-core when it can be imported; without it, by Chromium's own headless `--dump-dom` (the page
 * writes its result into the DOM). The test CA is not installed in a profile: `--ignore-certificate-errors` stands in
 * for it (acceptable in a test: what is checked is the protocol, not the trust path).
 */
import assert from "node:assert/strict"
import { execFile } from "node:child_process"
import { createHash } from "node:crypto"
import { existsSync, mkdtempSync, rmSync } from "node:fs"
import http from "node:http"
import type net from "node:net"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { after, before, test } from "node:test"
import type { HttpEngine } from "../../../src/proxy/http/engine.ts"
import { createPki, type Pki } from "../../helpers/pki.ts"
import { type RunningPortcullis, startPortcullis } from "../../helpers/portcullis.ts"

const CHROMIUM = "/usr/bin/chromium"
const GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
const ARGS = [
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--ignore-certificate-errors",
]

/** The page: a WebSocket to its own origin; the title reports the echo and the page's own protocol. */
const PAGE = `<!doctype html><html><head><title>pending</title></head><body><script>
const ws = new WebSocket("wss://" + location.host + "/ws");
ws.onopen = () => ws.send("ping");
ws.onmessage = (e) => {
  const nav = performance.getEntriesByType("navigation")[0];
  document.title = "done " + e.data + " " + (nav ? nav.nextHopProtocol : "?");
  ws.close();
};
ws.onerror = () => { document.title = "error"; };
</script></body></html>`

/** The few playwright-core members used (typed here: the package is optional, so its types may be absent). */
interface PlaywrightPage {
  goto(url: string): Promise<unknown>
  waitForFunction(fn: () => boolean, arg: undefined, options: { timeout: number }): Promise<unknown>
  title(): Promise<string>
}
interface Playwright {
  chromium: {
    launchPersistentContext(
      dir: string,
      options: object,
    ): Promise<{ newPage(): Promise<PlaywrightPage>; close(): Promise<void> }>
  }
}
let playwright: Playwright | undefined
try {
  const name = "playwright-core"
  playwright = (await import(name)) as Playwright
} catch {
  console.log("# playwright-core cannot be imported: driving Chromium with headless --dump-dom instead")
  playwright = undefined
}
const skip = !existsSync(CHROMIUM) ? `${CHROMIUM} is missing (apt-get install -y chromium)` : false

let pki: Pki
let pc: RunningPortcullis
let backend: http.Server
const upgrades: string[] = []

/** unmask reads one masked client frame's payload (RFC 6455 §5.2; payloads under 126 bytes). */
function unmask(frame: Buffer): string | undefined {
  if (frame.length < 6) return undefined
  const len = frame[1]! & 0x7f
  if (frame.length < 6 + len) return undefined
  const mask = frame.subarray(2, 6)
  return Buffer.from(frame.subarray(6, 6 + len).map((b, i) => b ^ mask[i % 4]!)).toString()
}

before(async () => {
  if (skip) return
  pki = await createPki()
  const site = await pki.issue({ names: ["localhost"] })
  backend = http.createServer((_req, res) => {
    res.writeHead(200, { "content-type": "text/html; charset=utf-8" })
    res.end(PAGE)
  })
  backend.on("upgrade", (req: http.IncomingMessage, socket: net.Socket) => {
    upgrades.push(req.url ?? "")
    const accept = createHash("sha1")
      .update(String(req.headers["sec-websocket-key"]) + GUID)
      .digest("base64")
    socket.write(
      `HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-accept: ${accept}\r\n\r\n`,
    )
    let buffered = Buffer.alloc(0)
    socket.on("data", (d: Buffer) => {
      buffered = Buffer.concat([buffered, d])
      const text = unmask(buffered)
      if (text === undefined || (buffered[0]! & 0x0f) !== 0x1) return
      buffered = Buffer.alloc(0)
      const reply = Buffer.from(`pong-${text}`)
      socket.write(Buffer.concat([Buffer.from([0x81, reply.length]), reply]))
    })
    socket.on("error", () => socket.destroy())
  })
  await new Promise<void>((resolve) => backend.listen(0, "127.0.0.1", resolve))
  const port = (backend.address() as net.AddressInfo).port
  pc = await startPortcullis(`
listeners:
  - name: web
    address: 127.0.0.1:0
    tls: { certificates: [{ cert: ${site.certPath}, key: ${site.keyPath} }] }
    routes: [{ upstream: app }]
upstreams:
  app: { backends: ["127.0.0.1:${port}"] }
access_log: { enabled: false }
`)
})

after(async () => {
  await pc?.close()
  backend?.closeAllConnections()
  await new Promise((resolve) => (backend ? backend.close(resolve) : resolve(undefined)))
  await pki?.close()
})

/** titleWithPlaywright loads the page in playwright-core's Chromium and waits for the page to finish. */
async function titleWithPlaywright(url: string, profile: string): Promise<string> {
  const context = await playwright!.chromium.launchPersistentContext(profile, {
    headless: true,
    executablePath: CHROMIUM,
    args: ARGS,
    ignoreHTTPSErrors: true,
  })
  try {
    const page = await context.newPage()
    await page.goto(url)
    await page.waitForFunction(() => document.title !== "pending", undefined, { timeout: 15_000 })
    return await page.title()
  } finally {
    await context.close()
  }
}

/** titleWithDumpDom runs Chromium's headless `--dump-dom`; the virtual time budget lets the WebSocket finish. */
function titleWithDumpDom(url: string, profile: string): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(
      CHROMIUM,
      ["--headless", ...ARGS, `--user-data-dir=${profile}`, "--virtual-time-budget=10000", "--dump-dom", url],
      { timeout: 30_000, encoding: "utf8" },
      (err, stdout, stderr) => {
        if (err) reject(new Error(`chromium: ${err.message}\n${stderr}`))
        else resolve(/<title>([^<]*)<\/title>/.exec(stdout)?.[1] ?? `no title in ${stdout.slice(0, 200)}`)
      },
    )
  })
}

test("Chromium's WebSocket to the page's origin is an extended CONNECT stream on the page's h2 connection", {
  skip,
}, async () => {
  const profile = mkdtempSync(join(tmpdir(), "pc-chromium-"))
  try {
    const url = `https://localhost:${pc.port()}/`
    const title = playwright ? await titleWithPlaywright(url, profile) : await titleWithDumpDom(url, profile)
    assert.equal(title, "done pong-ping h2")
    assert.deepEqual(upgrades, ["/ws"])
    // Server side: the engine took the WebSocket as an RFC 8441 stream (an HTTP/1.1 upgrade is not counted there).
    const listener = [...pc.runtime.generation!.listeners.values()][0] as unknown as { engine: HttpEngine }
    assert.equal(listener.engine.h2WebSockets, 1)
  } finally {
    rmSync(profile, { recursive: true, force: true })
  }
})
