/**
 * @module ticket-callback: session tickets sealed and opened from the key ring at handshake time, through Node's
 * internal ticket-key callback, so a rotation reaches every context at once and tickets of older keys still open.
 *
 * NODE INTERNAL (checked on Node 24.21.0, OpenSSL 3.5; guarded by test/tls/ticket-callback.test.ts): the native
 * SecureContext (`tls.SecureContext#context`) has `enableTicketKeyCallback()`, which points OpenSSL's
 * SSL_CTX_set_tlsext_ticket_key_cb at SecureContext::TicketKeyCallback (src/crypto/crypto_context.cc); that calls
 * `context.onticketkeycallback(name, iv, encrypt)` and reads an array back:
 *   sealing (encrypt true):  [1, hmacKey, aesKey, keyName, iv]  (Node copies keyName and iv into the ticket)
 *   opening (encrypt false): [r, hmacKey, aesKey] with r = 1 (valid), 2 (valid, issue a new ticket) or
 *                            0 (unknown: the ticket is ignored and the handshake is a full one)
 * Node keeps it "only for the regression test" test/parallel/test-https-resume-after-renew.js, so it may change
 * without notice. Its failure modes decide the shape of the code below: the answer's keys are read with
 * Buffer::Length and ArrayBufferViewContents, which CHECK-abort the process on anything but a buffer, so every
 * answer carries 16-byte buffers, even when r is 0; an exception thrown from the callback goes to Node's
 * uncaught-exception path (the process exits), so nothing is allowed to escape it.
 *
 * Why 2 on every open: OpenSSL sends a NewSessionTicket after a resumed TLS 1.3 handshake only when the callback
 * answered SSL_TICKET_RETURN_USE_RENEW (2); with 1 (what Node's own TicketCompatibilityCallback answers) the client
 * gets none, and one that uses each ticket once (RFC 8446 §C.4) runs out. In TLS 1.2 it re-issues the ticket
 * (RFC 5077 §3.3), sealed under the current key, which also moves clients off a previous key.
 */
import { randomFillSync } from "node:crypto"
import type tls from "node:tls"
import { deriveTicketKey, type TicketKey, type TicketKeyRing } from "../state/ticket-keys.ts"

/** The part of Node's native SecureContext this module uses (not in @types/node: an internal). */
interface NativeTicketContext {
  enableTicketKeyCallback(): void
  onticketkeycallback?: (name: Buffer, iv: Buffer, encrypt: boolean) => unknown[]
}

/** One ring key as this listener uses it: the 48 derived bytes split as Node's ticketKeys format splits them. */
interface Derived {
  name: Buffer
  hmac: Buffer
  aes: Buffer
  /** [2, hmac, aes]: the open answer for this key, made once */
  open: unknown[]
}

const PART = 16
/**
 * IV_POOL: random bytes for this many ticket IVs are drawn at once. randomFillSync costs about 2.5 µs per call
 * (a crypto job per call), most of a seal; one call per 256 seals takes that off the handshake. Each IV is still
 * fresh CSPRNG output used once (RFC 5077 §4's IV for AES-CBC must be unpredictable, and is).
 */
const IV_POOL = 256
/** The answer for a ticket that is not ours (or any failure while opening): 0 = full handshake; valid buffers. */
const UNKNOWN: readonly unknown[] = Object.freeze([0, Buffer.alloc(PART), Buffer.alloc(PART)])
/** When sealing fails: 0 = no ticket this time (OpenSSL skips a TLS 1.3 ticket, sends an empty TLS 1.2 one). */
const NO_TICKET: readonly unknown[] = Object.freeze([
  0,
  Buffer.alloc(PART),
  Buffer.alloc(PART),
  Buffer.alloc(PART),
  Buffer.alloc(PART),
])

/**
 * NoTickets is `session_tickets: false`: every seal answers "no ticket" and every open "full handshake". OpenSSL
 * then sends no TLS 1.3 NewSessionTicket at all, and in TLS 1.2, to a client that offered the session_ticket
 * extension, the zero-length NewSessionTicket of RFC 5077 §3.3 (a server that decided against a ticket) with no
 * session id in its ServerHello: nothing to resume with. Not SSL_OP_NO_TICKET: with it OpenSSL 3 sends two stateful
 * TLS 1.3 tickets (session ids for a server cache) that Node, which keeps no cache without tls.Server's session
 * events, can never resume; and Node exposes no SSL_CTX_set_num_tickets(0). The TLS 1.2 ticket cannot be left out
 * on the same context (SSL_OP_NO_TICKET is per SSL_CTX and would bring the TLS 1.3 ones back).
 */
export const NoTickets = {
  callback: (_name: Buffer, _iv: Buffer, encrypt: boolean): unknown[] => (encrypt ? NO_TICKET : UNKNOWN) as unknown[],
  install(context: tls.SecureContext): void {
    const native = (context as unknown as { context: NativeTicketContext }).context
    native.enableTicketKeyCallback()
    native.onticketkeycallback = NoTickets.callback
  },
}

/** TicketKeysOptions: how long a previous key's tickets open on this listener, and the clock. */
export interface TicketKeysOptions {
  /**
   * A previous key's tickets open here until graceMs after it stopped being current (when its successor was made);
   * undefined: as long as the ring holds the key.
   */
  graceMs?: number | undefined
  now?: () => number
  /** called with the error when sealing or opening failed (the handshake went on without the ticket) */
  onError?: (err: unknown) => void
}

/**
 * ListenerTicketKeys seals and opens one listener's tickets with keys derived from the ring for its scope
 * (deriveTicketKey), reading the ring on every call: nothing to rebuild when it rotates. Derived keys are cached
 * per ring key (a WeakMap: keys the ring dropped go with it), so a handshake does an HKDF only the first time it
 * meets a key, and sealing allocates nothing (Node copies name and iv out of the answer before it returns).
 */
export class ListenerTicketKeys {
  readonly #ring: TicketKeyRing
  readonly #scope: string
  readonly #graceMs: number | undefined
  readonly #now: () => number
  readonly #onError: ((err: unknown) => void) | undefined
  readonly #derived = new WeakMap<TicketKey, Derived>()
  /** The key #derive was last asked for and its derivation (it holds one ring key alive until the next is asked). */
  #lastKey: TicketKey | undefined
  #lastDerived: Derived | undefined
  readonly #iv = Buffer.alloc(PART)
  /** IV_POOL IVs' worth of random bytes; #ivAt is the next unused one (refilled when all are used). */
  readonly #ivPool = Buffer.alloc(PART * IV_POOL)
  #ivAt = PART * IV_POOL
  /** [1, hmac, aes, name, iv], refilled for the current key on each seal */
  readonly #seal: unknown[] = [1, UNKNOWN[1], UNKNOWN[2], UNKNOWN[1], this.#iv]
  /** The callback installed on contexts (one function for all of them). */
  readonly callback: (name: Buffer, iv: Buffer, encrypt: boolean) => unknown[]

  constructor(ring: TicketKeyRing, scope: string, options: TicketKeysOptions = {}) {
    this.#ring = ring
    this.#scope = scope
    this.#graceMs = options.graceMs
    this.#now = options.now ?? Date.now
    this.#onError = options.onError
    this.callback = (name, _iv, encrypt) => {
      try {
        return encrypt ? this.seal() : this.open(name)
      } catch (err) {
        try {
          this.#onError?.(err)
        } catch {
          // A failing error reporter must not take the process down either.
        }
        return (encrypt ? NO_TICKET : UNKNOWN) as unknown[]
      }
    }
  }

  /** seal answers a sealing call: the current key, derived for this scope, and a fresh random IV (IV_POOL). */
  seal(): unknown[] {
    const key = this.#derive(this.#ring.current())
    if (this.#ivAt === this.#ivPool.length) {
      randomFillSync(this.#ivPool)
      this.#ivAt = 0
    }
    // Node copies the IV out of the answer into the ticket (where it is public) before the callback returns.
    this.#ivPool.copy(this.#iv, 0, this.#ivAt, this.#ivAt + PART)
    this.#ivAt += PART
    const answer = this.#seal
    answer[1] = key.hmac
    answer[2] = key.aes
    answer[3] = key.name
    return answer
  }

  /**
   * open answers an opening call for a ticket carrying key name `name`: the ring key (current, or a previous one
   * still held and within graceMs) whose derived name it is, with 2 (renew); or 0 (full handshake) for any other.
   */
  open(name: Buffer): unknown[] {
    // The current key first: nearly every ticket is of it, and it is always held and never past a grace, so it
    // needs neither the ring's list (MemoryTicketKeyRing.keys() expires and copies it: two arrays and a clock read
    // per call, ≈1 µs of each resumed handshake) nor the clock.
    const current = this.#ring.current()
    const derived = this.#derive(current)
    if (derived.name.equals(name)) return derived.open
    const keys = this.#ring.keys()
    const now = this.#now()
    for (let i = 0; i < keys.length; i++) {
      const key = keys[i]!
      // keys() is newest first: key i stopped being current when key i-1 was made.
      if (i > 0 && this.#graceMs !== undefined && now - keys[i - 1]!.createdAt >= this.#graceMs) break
      if (key === current) continue
      const older = this.#derive(key)
      if (older.name.equals(name)) return older.open
    }
    return UNKNOWN as unknown[]
  }

  /** install makes `context` seal and open its tickets here instead of with a fixed ticketKeys. */
  install(context: tls.SecureContext): void {
    const native = (context as unknown as { context: NativeTicketContext }).context
    native.enableTicketKeyCallback()
    native.onticketkeycallback = this.callback
  }

  #derive(key: TicketKey): Derived {
    // The current key, nearly every time: no WeakMap lookup for it.
    if (key === this.#lastKey) return this.#lastDerived!
    let derived = this.#derived.get(key)
    if (!derived) {
      const bytes = deriveTicketKey(key, this.#scope)
      const hmac = bytes.subarray(PART, 2 * PART)
      const aes = bytes.subarray(2 * PART, 3 * PART)
      derived = { name: bytes.subarray(0, PART), hmac, aes, open: [2, hmac, aes] }
      this.#derived.set(key, derived)
    }
    this.#lastKey = key
    this.#lastDerived = derived
    return derived
  }
}
