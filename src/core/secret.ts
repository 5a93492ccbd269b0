/** @module secret: wraps private keys so that logs, errors and JSON never print them. */
import { inspect } from "node:util"

const REDACTED = "[redacted]"

/** Secret holds a sensitive value (a PEM key); printing it in any way gives "[redacted]". */
export class Secret<T = string | Buffer> {
  readonly #value: T

  constructor(value: T) {
    this.#value = value
  }

  /** reveal returns the value, for the one place that needs it (building a SecureContext). */
  reveal(): T {
    return this.#value
  }

  toString(): string {
    return REDACTED
  }

  toJSON(): string {
    return REDACTED
  }

  [inspect.custom](): string {
    return REDACTED
  }
}
