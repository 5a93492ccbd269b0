/** @module hash-key: the `hash_key` setting compiled, and the key it names read from one request. */

/** HashKey is the compiled `hash_key`: what part of a request the hash balancer hashes. */
export type HashKey =
  | { kind: "client_ip" }
  | { kind: "path" }
  | { kind: "header"; name: string }
  | { kind: "cookie"; name: string }

/** compileHashKey parses "client_ip" | "path" | "header:NAME" | "cookie:NAME" (the schema has checked it). */
export function compileHashKey(text: string): HashKey {
  if (text.startsWith("header:")) return { kind: "header", name: text.slice(7).toLowerCase() }
  if (text.startsWith("cookie:")) return { kind: "cookie", name: text.slice(7) }
  return text === "path" ? { kind: "path" } : { kind: "client_ip" }
}

/** KeyedRequest: what of a request (HTTP/1.1 or HTTP/2) the key is read from; header names are lower case. */
export interface KeyedRequest {
  readonly url?: string | undefined
  readonly headers: Readonly<Record<string, string | string[] | undefined>>
}

/** hashKeyOf reads the request's hash key; undefined (no such header or cookie) falls back to round robin. */
export function hashKeyOf(hashKey: HashKey, req: KeyedRequest, clientAddress: string): string | undefined {
  switch (hashKey.kind) {
    case "client_ip":
      return clientAddress
    case "path": {
      const url = req.url ?? "/"
      const q = url.indexOf("?")
      return q === -1 ? url : url.slice(0, q)
    }
    case "header": {
      const value = req.headers[hashKey.name]
      return Array.isArray(value) ? value.join(",") : value
    }
    case "cookie":
      return readCookie(req.headers["cookie"], hashKey.name)
  }
}

/** readCookie finds one cookie's value in a Cookie header (HTTP/2 joins several with "; "). */
export function readCookie(header: string | string[] | undefined, name: string): string | undefined {
  if (header === undefined) return undefined
  const text = Array.isArray(header) ? header.join("; ") : header
  let start = 0
  while (start < text.length) {
    let end = text.indexOf(";", start)
    if (end === -1) end = text.length
    const eq = text.indexOf("=", start)
    if (eq !== -1 && eq < end && text.slice(start, eq).trim() === name) return text.slice(eq + 1, end).trim()
    start = end + 1
  }
  return undefined
}
