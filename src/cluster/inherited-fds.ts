/**
 * @module inherited-fds: the listening sockets a process took over from the one it replaces (binary upgrade):
 * the old process passes them as extra stdio file descriptors and names them in PORTCULLIS_LISTEN_FDS, a JSON
 * object from listen key (a bound address as addressKey writes it, or "admin") to the descriptor number.
 */

/** LISTEN_FDS_ENV names the variable that maps listen keys to inherited file descriptors. */
export const LISTEN_FDS_ENV = "PORTCULLIS_LISTEN_FDS"

/**
 * InheritedFds hands out each inherited descriptor once (the first listener on that key takes it); what is left
 * when start-up ends belongs to addresses the new config dropped, and is closed by the caller.
 */
export class InheritedFds {
  readonly #fds: Map<string, number>
  /** This process was started by a takeover (it must say when it is ready). */
  readonly claimed: boolean

  constructor(fds: Map<string, number> = new Map(), claimed = false) {
    this.#fds = fds
    this.claimed = claimed
  }

  /** fromEnv reads PORTCULLIS_LISTEN_FDS and removes it, so processes started later do not inherit the claim. */
  static fromEnv(env: NodeJS.ProcessEnv = process.env): InheritedFds {
    const text = env[LISTEN_FDS_ENV]
    delete env[LISTEN_FDS_ENV]
    const fds = new Map<string, number>()
    if (!text) return new InheritedFds(fds)
    const parsed = JSON.parse(text) as Record<string, unknown>
    for (const [key, fd] of Object.entries(parsed)) if (typeof fd === "number" && fd >= 3) fds.set(key, fd)
    return new InheritedFds(fds, true)
  }

  /** take returns the descriptor inherited for key, once; undefined when there is none. */
  take(key: string): number | undefined {
    const fd = this.#fds.get(key)
    this.#fds.delete(key)
    return fd
  }

  get size(): number {
    return this.#fds.size
  }
}
