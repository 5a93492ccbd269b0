/** @module auth: the admin API's bearer token, read from admin.token_file and compared in constant time. */
import { createHash, timingSafeEqual } from "node:crypto"
import { readFileSync } from "node:fs"
import type { IncomingHttpHeaders } from "node:http"
import { errorMessage, PortcullisError } from "../core/errors.ts"

/**
 * BearerToken checks `Authorization: Bearer <token>` (RFC 6750 §2.1). Both sides are hashed with SHA-256 first, so
 * timingSafeEqual compares equal-length digests and the time taken says nothing about the token's length either.
 */
export class BearerToken {
  readonly #digest: Buffer

  constructor(token: string) {
    this.#digest = digest(token)
  }

  /** fromFile reads the token (surrounding whitespace trimmed); an empty or unreadable file is a config error. */
  static fromFile(path: string): BearerToken {
    let text: string
    try {
      text = readFileSync(path, "utf8").trim()
    } catch (err) {
      throw new PortcullisError("PC_ADMIN_TOKEN_FILE", `admin.token_file ${path}: ${errorMessage(err)}`, {
        source: "config",
      })
    }
    if (text === "")
      throw new PortcullisError("PC_ADMIN_TOKEN_FILE", `admin.token_file ${path} is empty`, { source: "config" })
    return new BearerToken(text)
  }

  /** allows says whether the request carries this token. */
  allows(headers: IncomingHttpHeaders): boolean {
    const header = headers.authorization
    const match = header === undefined ? null : /^Bearer[ ]+(\S+)\s*$/i.exec(header)
    const given = digest(match ? match[1]! : "")
    // Always compare, so a missing header takes as long as a wrong one.
    return timingSafeEqual(given, this.#digest) && match !== null
  }
}

function digest(text: string): Buffer {
  return createHash("sha256").update(text).digest()
}
