/** @module pretty-log: renders pino's JSON lines for a terminal (--log-format pretty): time, level, message, key=value. */
import { Writable } from "node:stream"

const LEVELS: Record<number, string> = { 10: "TRACE", 20: "DEBUG", 30: "INFO ", 40: "WARN ", 50: "ERROR", 60: "FATAL" }
/** Fields every line carries that a person at a terminal does not need on each line. */
const SKIP = new Set(["level", "time", "msg", "pid", "hostname"])

/** formatPretty turns one JSON log line into `HH:MM:SS.mmm LEVEL message key=value ...`; a non-JSON line passes. */
export function formatPretty(line: string): string {
  let entry: Record<string, unknown>
  try {
    entry = JSON.parse(line) as Record<string, unknown>
  } catch {
    return line
  }
  const time = typeof entry["time"] === "number" ? new Date(entry["time"]).toISOString().slice(11, 23) : ""
  const level = LEVELS[entry["level"] as number] ?? String(entry["level"] ?? "")
  let out = `${time} ${level} ${String(entry["msg"] ?? "")}`
  for (const key in entry) {
    if (SKIP.has(key)) continue
    const value = entry[key]
    if (value === undefined) continue
    const text = typeof value === "string" ? value : JSON.stringify(value)
    out += ` ${key}=${/[\s"=]/.test(text) && typeof value === "string" ? JSON.stringify(text) : text}`
  }
  return out
}

/** PrettyStream is a pino destination: each write is one JSON line; it writes the pretty form to `out`. */
export class PrettyStream extends Writable {
  readonly #out: NodeJS.WritableStream

  constructor(out: NodeJS.WritableStream = process.stdout) {
    super({ decodeStrings: false })
    this.#out = out
  }

  override _write(chunk: string | Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    const text = typeof chunk === "string" ? chunk : chunk.toString("utf8")
    let out = ""
    for (const line of text.split("\n")) if (line !== "") out += `${formatPretty(line)}\n`
    this.#out.write(out)
    callback()
  }
}
