/**
 * @module h2-check: active health checks in HTTP/2, for upstreams whose backends speak it (protocol h2 or h2c): a
 * plain GET of `path`, or the standard gRPC health check (grpc.health.v1.Health/Check, type grpc), which a gRPC
 * server answers SERVING or NOT_SERVING for the whole server or one `grpc_service`.
 */
import http2 from "node:http2"
import type net from "node:net"

/** H2CheckOptions: one check's target and what counts as healthy. */
export interface H2CheckOptions {
  /** "http" for h2c, "https" for h2 over TLS (the socket is already through TLS with ALPN h2). */
  scheme: "http" | "https"
  authority: string
  kind: "http" | "grpc"
  path: string
  /** gRPC: the service name asked about ("" = the server as a whole). */
  service: string
  statusLow: number
  statusHigh: number
  expectBody: string | undefined
}

const MAX_BODY = 64 * 1024

/** encodeHealthCheckRequest: HealthCheckRequest{service} in gRPC's length-prefixed framing (field 1, string). */
function encodeHealthCheckRequest(service: string): Buffer {
  const name = Buffer.from(service, "utf8")
  const message =
    name.length === 0 ? Buffer.alloc(0) : Buffer.concat([Buffer.from([0x0a, ...varint(name.length)]), name])
  const frame = Buffer.alloc(5)
  frame.writeUInt32BE(message.length, 1)
  return Buffer.concat([frame, message])
}

function varint(n: number): number[] {
  const out: number[] = []
  while (n >= 0x80) {
    out.push((n & 0x7f) | 0x80)
    n >>>= 7
  }
  out.push(n)
  return out
}

/** servingStatus reads HealthCheckResponse.status (field 1, varint) from the first gRPC message; 0 when absent. */
function servingStatus(body: Buffer): number {
  if (body.length < 5) return 0
  const length = body.readUInt32BE(1)
  const message = body.subarray(5, 5 + length)
  let i = 0
  while (i < message.length) {
    const key = message[i++]!
    if (key === 0x08) return message[i] ?? 0
    // Skip other fields: varints and length-delimited ones (a newer server may add some).
    if ((key & 7) === 0) while (i < message.length && (message[i++]! & 0x80) !== 0) {}
    else if ((key & 7) === 2) i += (message[i] ?? 0) + 1
    else return 0
  }
  return 0
}

/** h2Check runs one check on a connected socket (TLS done when re-encrypting) and resolves or rejects with why. */
export function h2Check(socket: net.Socket, o: H2CheckOptions, timeoutMs: number): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const session = http2.connect(`${o.scheme}://${o.authority}`, { createConnection: () => socket })
    let settled = false
    const done = (err?: Error) => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      session.destroy()
      if (err) reject(err)
      else resolve()
    }
    const timer = setTimeout(() => done(new Error(`timed out after ${timeoutMs} ms`)), timeoutMs)
    session.on("error", (err) => done(err))
    session.on("close", () => done(new Error("connection closed before a response")))
    const grpc = o.kind === "grpc"
    const stream = session.request(
      grpc
        ? {
            ":method": "POST",
            ":path": "/grpc.health.v1.Health/Check",
            "content-type": "application/grpc",
            te: "trailers",
            "user-agent": "portcullis-health-check",
          }
        : { ":method": "GET", ":path": o.path, "user-agent": "portcullis-health-check" },
      { endStream: !grpc },
    )
    stream.on("error", (err) => done(err))
    let status = 0
    let grpcStatus: string | undefined
    const chunks: Buffer[] = []
    let size = 0
    stream.on("response", (headers) => {
      status = Number(headers[":status"])
      grpcStatus = headers["grpc-status"] as string | undefined // trailers-only answer
      if (!grpc && (status < o.statusLow || status > o.statusHigh)) {
        done(new Error(`status ${status} (expected ${o.statusLow}-${o.statusHigh})`))
      } else if (!grpc && o.expectBody === undefined) done()
    })
    stream.on("trailers", (trailers) => {
      grpcStatus = trailers["grpc-status"] as string | undefined
    })
    stream.on("data", (chunk: Buffer) => {
      if (size > MAX_BODY) return
      chunks.push(chunk)
      size += chunk.length
      if (!grpc && o.expectBody !== undefined && Buffer.concat(chunks).toString("utf8").includes(o.expectBody)) done()
    })
    stream.on("end", () => {
      const body = Buffer.concat(chunks)
      if (!grpc) {
        done(
          o.expectBody === undefined || body.toString("utf8").includes(o.expectBody)
            ? undefined
            : new Error(`body does not contain ${JSON.stringify(o.expectBody)}`),
        )
        return
      }
      if (grpcStatus !== "0") {
        done(new Error(`grpc-status ${grpcStatus ?? "missing"} from grpc.health.v1.Health/Check`))
        return
      }
      const serving = servingStatus(body)
      // HealthCheckResponse.ServingStatus: 1 SERVING, 2 NOT_SERVING, 3 SERVICE_UNKNOWN.
      done(serving === 1 ? undefined : new Error(`gRPC health status ${serving} (1 = SERVING expected)`))
    })
    if (grpc) stream.end(encodeHealthCheckRequest(o.service))
  })
}
