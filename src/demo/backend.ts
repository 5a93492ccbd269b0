/** @module demo-backend: the built-in backend of the embedded default, so `npm start` answers at once. */
import http from "node:http"

/** DemoBackend is a small HTTP server on 127.0.0.1 that echoes what it received through the proxy (the body's size). */
export interface DemoBackend {
  port: number
  close(): Promise<void>
}

/** startDemoBackend listens on a free loopback port. */
export function startDemoBackend(): Promise<DemoBackend> {
  const server = http.createServer((req, res) => {
    // The body is read (counted, not kept) before the answer, as an application reads its upload: a client still
    // sending when the answer comes is a case some clients handle badly (curl 7.88 over HTTP/2 stalls on it).
    let bodyBytes = 0
    req.on("data", (chunk: Buffer) => {
      bodyBytes += chunk.length
    })
    req.on("end", () => {
      const body = JSON.stringify(
        {
          message:
            "Hello from Portcullis: TLS ended at the proxy, this is the built-in demo backend speaking plain HTTP.",
          method: req.method,
          url: req.url,
          httpVersion: req.httpVersion,
          headers: req.headers,
          bodyBytes,
        },
        null,
        2,
      )
      res.writeHead(200, { "content-type": "application/json", "content-length": Buffer.byteLength(body) + 1 })
      res.end(`${body}\n`)
    })
  })
  return new Promise((resolve, reject) => {
    server.once("error", reject)
    server.listen(0, "127.0.0.1", () => {
      const address = server.address()
      resolve({
        port: typeof address === "object" && address ? address.port : 0,
        close: () => new Promise((r) => server.close(() => r())),
      })
    })
  })
}
