/** @module redirect-listener: a plain HTTP listener that only answers 308 to the https URL (`redirect_https`). */
import http from "node:http"
import type net from "node:net"
import type { ListenerConfig } from "../config/schema.ts"

/** Http01Answers: the ACME http-01 tokens being validated (tls/acme/challenges/http-01.ts). */
export interface Http01Answers {
  answer(path: string): string | undefined
}

const HTTP01_PREFIX = "/.well-known/acme-challenge/"

/**
 * RedirectListener sends every request to https://host[:port]/path with 308 Permanent Redirect, except ACME
 * http-01 validation requests (RFC 8555 §8.3), answered with the key authorization of a pending token (404 for
 * any other token) before anything is redirected.
 */
export class RedirectListener {
  readonly config: ListenerConfig
  readonly #server: http.Server
  readonly #sockets = new Set<net.Socket>()

  constructor(config: ListenerConfig, acme?: Http01Answers) {
    this.config = config
    const port = config.redirect_https!
    this.#server = http.createServer(
      {
        headersTimeout: config.limits.header_timeout,
        requestTimeout: config.limits.request_timeout,
        maxHeaderSize: config.limits.max_header_size,
      },
      (req, res) => {
        if (acme && req.url?.startsWith(HTTP01_PREFIX)) {
          const answer = acme.answer(req.url)
          const body = answer ?? "no such challenge\n"
          res.writeHead(answer === undefined ? 404 : 200, {
            "content-type": answer === undefined ? "text/plain" : "application/octet-stream",
            "content-length": Buffer.byteLength(body),
          })
          res.end(req.method === "HEAD" ? undefined : body)
          return
        }
        const host = hostWithoutPort(req.headers.host ?? config.address.host)
        const location = `https://${host}${port === 443 ? "" : `:${port}`}${req.url ?? "/"}`
        const body = `Redirecting to ${location}\n`
        res.writeHead(308, { location, "content-type": "text/plain", "content-length": Buffer.byteLength(body) })
        res.end(req.method === "HEAD" ? undefined : body)
      },
    )
    this.#server.emit("listening") // starts Node's header timeout checks; see engine.ts
  }

  accept(socket: net.Socket): void {
    this.#sockets.add(socket)
    socket.on("close", () => this.#sockets.delete(socket))
    this.#server.emit("connection", socket)
  }

  get connections(): number {
    return this.#sockets.size
  }

  async close(graceMs: number, _closeIdle = true): Promise<void> {
    this.#server.closeIdleConnections()
    const deadline = Date.now() + graceMs
    while (this.#sockets.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50))
    this.destroy()
  }

  destroy(): void {
    for (const s of this.#sockets) s.destroy()
    this.#server.close()
  }

  status() {
    return {
      name: this.config.name,
      address: this.config.address,
      redirect_https: this.config.redirect_https,
      connections: this.connections,
    }
  }
}

/** hostWithoutPort keeps an IPv6 literal's brackets and drops any port; rejects characters that do not belong in a host. */
function hostWithoutPort(host: string): string {
  const clean = /^[A-Za-z0-9.\-_[\]:]+$/.test(host) ? host : "localhost"
  if (clean.startsWith("[")) return clean.slice(0, clean.indexOf("]") + 1)
  const colon = clean.indexOf(":")
  return colon >= 0 ? clean.slice(0, colon) : clean
}
