/**
 * @module grpc-status: how a failure the proxy itself answers reaches a gRPC client. A gRPC client reads only
 * `grpc-status` and `grpc-message`, so an HTTP 502 page would surface as an opaque UNKNOWN/INTERNAL; instead the
 * answer is a trailers-only response (HTTP 200, one HEADERS frame with END_STREAM) with the matching gRPC code
 * (grpc/doc/http-grpc-status-mapping.md, with 504 as DEADLINE_EXCEEDED: the proxy's own timeout expired).
 */

/** isGrpc: the request is gRPC (application/grpc, +proto, +json, ...), not gRPC-Web. */
export function isGrpc(contentType: string | string[] | undefined): boolean {
  return (
    typeof contentType === "string" &&
    contentType.startsWith("application/grpc") &&
    !contentType.startsWith("application/grpc-web")
  )
}

/** grpcStatusFor maps the HTTP status the proxy would have sent to a gRPC status code. */
export function grpcStatusFor(httpStatus: number): number {
  switch (httpStatus) {
    case 400:
      return 13 // INTERNAL
    case 401:
      return 16 // UNAUTHENTICATED
    case 403:
      return 7 // PERMISSION_DENIED
    case 404:
      return 12 // UNIMPLEMENTED: no route for this method
    case 408:
    case 504:
      return 4 // DEADLINE_EXCEEDED
    case 413:
    case 431:
      return 8 // RESOURCE_EXHAUSTED
    case 429:
    case 502:
    case 503:
      return 14 // UNAVAILABLE
    case 500:
      return 13 // INTERNAL
    default:
      return 2 // UNKNOWN
  }
}

/** grpcMessage percent-encodes a status message as gRPC requires (printable ASCII except %, kept as is). */
export function grpcMessage(text: string): string {
  let out = ""
  for (const byte of Buffer.from(text, "utf8")) {
    out +=
      byte >= 0x20 && byte <= 0x7e && byte !== 0x25
        ? String.fromCharCode(byte)
        : `%${byte.toString(16).toUpperCase().padStart(2, "0")}`
  }
  return out
}

/**
 * parseGrpcTimeout reads a grpc-timeout value ("100m", "5S", "1H": at most 8 digits and a unit) in milliseconds,
 * or undefined when absent or malformed (then no deadline applies, as gRPC servers do).
 */
export function parseGrpcTimeout(value: string | string[] | undefined): number | undefined {
  if (typeof value !== "string") return undefined
  const m = /^(\d{1,8})([HMSmun])$/.exec(value)
  if (!m) return undefined
  const n = Number(m[1])
  const unit = m[2]
  const ms =
    unit === "H"
      ? n * 3_600_000
      : unit === "M"
        ? n * 60_000
        : unit === "S"
          ? n * 1000
          : unit === "m"
            ? n
            : unit === "u"
              ? n / 1000
              : n / 1e6
  return Math.max(1, Math.ceil(ms))
}
