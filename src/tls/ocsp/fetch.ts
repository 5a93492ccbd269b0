/**
 * @module fetch: sends one OCSP request to a responder by HTTP POST (RFC 6960 Appendix A.1) and reads the answer,
 * with a deadline on the whole exchange and a cap on the body. Runs in the background, never in a handshake.
 */
import http from "node:http"
import https from "node:https"
import { TlsError } from "../../core/errors.ts"

/** The most a responder may send: real responses are 1-4 KiB (one signature, perhaps a responder certificate). */
const MAX_BODY = 64 * 1024

/** fetchOcsp POSTs `request` to `url` and resolves with the response body (DER); rejects PC_OCSP_FETCH. */
export function fetchOcsp(url: string, request: Buffer, timeoutMs: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    let settled = false
    const fail = (detail: string) => {
      if (settled) return
      settled = true
      clearTimeout(deadline)
      req.destroy()
      reject(new TlsError("PC_OCSP_FETCH", `fetching the OCSP response from ${url}: ${detail}`))
    }
    const client = url.startsWith("https:") ? https : http
    const req = client.request(url, {
      method: "POST",
      headers: {
        "content-type": "application/ocsp-request",
        accept: "application/ocsp-response",
        "content-length": request.length,
      },
    })
    // One deadline for connect, send and the whole answer: a responder that accepts and never answers is cut off.
    const deadline = setTimeout(() => fail(`no answer within ${timeoutMs} ms`), timeoutMs)
    deadline.unref()
    req.on("error", (err: NodeJS.ErrnoException) => fail(err.code ?? err.message))
    req.on("response", (res) => {
      if (res.statusCode !== 200) {
        res.resume()
        fail(`HTTP ${res.statusCode}`)
        return
      }
      const chunks: Buffer[] = []
      let size = 0
      res.on("data", (chunk: Buffer) => {
        size += chunk.length
        if (size > MAX_BODY) fail(`answer larger than ${MAX_BODY} bytes`)
        else chunks.push(chunk)
      })
      res.on("error", (err: NodeJS.ErrnoException) => fail(err.code ?? err.message))
      res.on("end", () => {
        if (settled) return
        settled = true
        clearTimeout(deadline)
        resolve(Buffer.concat(chunks))
      })
    })
    req.end(request)
  })
}
