/**
 * @module dashboard: GET / on the admin address: the live dashboard's page and assets (static files of the package,
 * uPlot from its own npm package, never a CDN) and GET /dashboard/data, the snapshot the page polls every second.
 */
import { readFileSync } from "node:fs"
import type http from "node:http"
import { createRequire } from "node:module"
import { join } from "node:path"
import { errorMessage } from "../../core/errors.ts"
import { DashboardFeed } from "./data.ts"

/**
 * The page runs only its own files: no inline script or style, no other origin (so an SNI name that reached the
 * failure list cannot run as script even if a bug let it into markup), no framing.
 */
export const CONTENT_SECURITY_POLICY = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self' data:",
  "connect-src 'self'",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join("; ")

interface Asset {
  type: string
  body: Buffer
}

const STATIC = join(import.meta.dirname, "static")

/** loadAssets reads the page's files once (about 85 KB with uPlot): a request is then a write of a Buffer. */
function loadAssets(): Map<string, Asset> {
  const uplot = join(createRequire(import.meta.url).resolve("uplot/package.json"), "../dist")
  const file = (path: string, type: string): Asset => ({ type, body: readFileSync(path) })
  return new Map([
    ["/", file(join(STATIC, "index.html"), "text/html; charset=utf-8")],
    ["/assets/dashboard.js", file(join(STATIC, "dashboard.js"), "text/javascript; charset=utf-8")],
    ["/assets/dashboard.css", file(join(STATIC, "dashboard.css"), "text/css; charset=utf-8")],
    ["/assets/uPlot.iife.min.js", file(join(uplot, "uPlot.iife.min.js"), "text/javascript; charset=utf-8")],
    ["/assets/uPlot.min.css", file(join(uplot, "uPlot.min.css"), "text/css; charset=utf-8")],
  ])
}

/**
 * Dashboard answers the page, its assets and the data endpoint; the admin API calls it after its own auth check,
 * so the page and its data need the same token or client certificate as /status.
 */
export class Dashboard {
  readonly feed: DashboardFeed
  readonly #assets = loadAssets()

  /** periodMs: how long one snapshot serves every poll (1 s; a test of the page's own window may shorten it). */
  constructor(data: () => unknown, periodMs = 1000) {
    this.feed = new DashboardFeed(data, periodMs)
  }

  /** serve answers GET/HEAD for a dashboard path and returns true, or returns false for any other path. */
  serve(req: http.IncomingMessage, res: http.ServerResponse, pathname: string): boolean {
    if (req.method !== "GET" && req.method !== "HEAD") return false
    if (pathname === "/dashboard/data") {
      const text = this.feed.text()
      if (typeof text === "string") send(req, res, "application/json", Buffer.from(text), "no-store")
      else {
        text.then(
          (t) => send(req, res, "application/json", Buffer.from(t), "no-store"),
          (err: unknown) => {
            const body = Buffer.from(`${JSON.stringify({ error: errorMessage(err) })}\n`)
            res.writeHead(500, { "content-type": "application/json", "content-length": body.length })
            res.end(body)
          },
        )
      }
      return true
    }
    const asset = this.#assets.get(pathname)
    if (!asset) return false
    // no-cache: a browser revalidates, so an upgraded package never pairs a new page with an old script.
    send(req, res, asset.type, asset.body, "no-cache")
    return true
  }
}

function send(req: http.IncomingMessage, res: http.ServerResponse, type: string, body: Buffer, cache: string): void {
  res.writeHead(200, {
    "content-type": type,
    "content-length": body.length,
    "cache-control": cache,
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
  })
  res.end(req.method === "HEAD" ? undefined : body)
}
