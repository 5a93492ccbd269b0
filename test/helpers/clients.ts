/** Real clients for tests: HTTPS over Node's tls with a chosen CA and SNI, HTTP/2, curl, and a raw WebSocket client. */
import { execFile } from "node:child_process"
import http2 from "node:http2"
import https from "node:https"
import tls from "node:tls"

export interface Reply {
  status: number
  headers: Record<string, string | string[] | undefined>
  body: Buffer
  text: string
  alpn?: string
  peerCN?: string
}

export interface RequestOptions {
  port: number
  /** the IP address to connect to (default 127.0.0.1; see loopback in portcullis.ts) */
  address?: string
  path?: string
  method?: string
  host?: string
  servername?: string
  ca?: string | Buffer
  headers?: Record<string, string | string[]>
  body?: string | Buffer
  agent?: https.Agent | false
  timeoutMs?: number
  /** more TLS options for the client (sigalgs, maxVersion, cert/key...) */
  tlsOptions?: tls.ConnectionOptions
}

/** request sends one HTTPS/1.1 request to 127.0.0.1:port (or address:port) with SNI servername (default "localhost"). */
export function request(options: RequestOptions): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = https.request(
      {
        host: options.address ?? "127.0.0.1",
        port: options.port,
        path: options.path ?? "/",
        method: options.method ?? "GET",
        servername: options.servername ?? "localhost",
        ca: options.ca,
        headers: { host: options.host ?? options.servername ?? "localhost", ...options.headers },
        agent: options.agent ?? false,
        timeout: options.timeoutMs ?? 10_000,
        ...options.tlsOptions,
      },
      (res) => {
        const socket = res.socket as tls.TLSSocket
        const chunks: Buffer[] = []
        res.on("data", (c: Buffer) => chunks.push(c))
        res.on("end", () => {
          const body = Buffer.concat(chunks)
          resolve({
            status: res.statusCode ?? 0,
            headers: res.headers,
            body,
            text: body.toString(),
            alpn: socket.alpnProtocol || undefined,
            peerCN: firstOf(socket.getPeerCertificate?.()?.subject?.CN),
          })
        })
        res.on("error", reject)
      },
    )
    req.on("timeout", () => req.destroy(new Error("client timeout")))
    req.on("error", reject)
    req.end(options.body)
  })
}

/** h2request opens an HTTP/2 session, sends one request and closes the session. */
export function h2request(options: RequestOptions): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const session = http2.connect(`https://${options.address ?? "127.0.0.1"}:${options.port}`, {
      servername: options.servername ?? "localhost",
      ca: options.ca,
      ...options.tlsOptions,
    })
    session.on("error", reject)
    const stream = session.request({
      ":method": options.method ?? "GET",
      ":path": options.path ?? "/",
      ":authority": options.host ?? options.servername ?? "localhost",
      ...options.headers,
    })
    const chunks: Buffer[] = []
    let status = 0
    let headers: Record<string, string | string[] | undefined> = {}
    stream.on("response", (h) => {
      status = Number(h[":status"])
      headers = h as Record<string, string | string[] | undefined>
    })
    stream.on("data", (c: Buffer) => chunks.push(c))
    stream.on("end", () => {
      const body = Buffer.concat(chunks)
      const alpn = (session.socket as tls.TLSSocket).alpnProtocol || undefined
      session.close()
      resolve({ status, headers, body, text: body.toString(), alpn })
    })
    stream.on("error", (err) => {
      session.close()
      reject(err)
    })
    stream.end(options.body)
  })
}

/** curl runs the curl CLI and returns stdout (and stderr on failure). */
export function curl(args: string[], timeoutMs = 20_000): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(
      "curl",
      ["-sS", "--max-time", String(Math.ceil(timeoutMs / 1000)), ...args],
      { timeout: timeoutMs + 2000 },
      (err, stdout, stderr) => {
        const code = err ? (typeof err.code === "number" ? err.code : 1) : 0
        resolve({ code, stdout, stderr })
      },
    )
  })
}

/** tlsConnect opens a TLS connection and resolves after the handshake (or rejects with its error). */
export function tlsConnect(options: tls.ConnectionOptions): Promise<tls.TLSSocket> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ host: "127.0.0.1", ...options }, () => resolve(socket))
    socket.once("error", reject)
    socket.setTimeout(10_000, () => socket.destroy(new Error("handshake timeout")))
  })
}

/** wsFrame builds one masked client frame (text when given a string). */
export function wsFrame(payload: string | Buffer): Buffer {
  const data = typeof payload === "string" ? Buffer.from(payload) : payload
  const opcode = typeof payload === "string" ? 0x1 : 0x2
  const mask = Buffer.from([1, 2, 3, 4])
  const masked = Buffer.from(data.map((b, i) => b ^ mask[i % 4]!))
  const header =
    data.length < 126
      ? Buffer.from([0x80 | opcode, 0x80 | data.length])
      : Buffer.from([0x80 | opcode, 0x80 | 126, data.length >> 8, data.length & 0xff])
  return Buffer.concat([header, mask, masked])
}

/** wsParse reads one unmasked server frame from a buffer; undefined when incomplete. */
export function wsParse(buf: Buffer): { opcode: number; payload: Buffer; rest: Buffer } | undefined {
  if (buf.length < 2) return undefined
  let len = buf[1]! & 0x7f
  let offset = 2
  if (len === 126) {
    if (buf.length < 4) return undefined
    len = buf.readUInt16BE(2)
    offset = 4
  }
  if (buf.length < offset + len) return undefined
  return { opcode: buf[0]! & 0x0f, payload: buf.subarray(offset, offset + len), rest: buf.subarray(offset + len) }
}

function firstOf(v: string | string[] | undefined): string | undefined {
  return Array.isArray(v) ? v[0] : v
}
