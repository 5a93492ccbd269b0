/**
 * @module client-census: what a listener's recent clients offered in their ClientHello (versions, groups, suites,
 * signature algorithms), kept as fixed-size bit-mask records in a ring, and how many each policy would refuse.
 */
import { type HelloSink, OFFER_WORDS, readOffer } from "./client-hello.ts"
import { judge, type PolicyOffer, type RefusalReason } from "./policy-offer.ts"
import { CIPHER_WORDS, CIPHERS, GROUPS, OTHER_BIT, SIGALGS, VERSION_OTHER, VERSIONS } from "./tls-codes.ts"

/** CensusWhatIf: of the window's clients, how many a policy would refuse, by reason. */
export interface CensusWhatIf {
  refused: number
  reasons?: Partial<Record<RefusalReason, number>>
  /** parts of the policy the census cannot judge (an OpenSSL keyword in ciphers, an unknown group name) */
  unjudged?: string[]
}

/** ListenerCensus: one listener's entry of GET /tls/clients. */
export interface ListenerCensus {
  /** clients in the window (the last `window.size` ClientHellos read, fewer at first) */
  clients: number
  window: { size: number; seen: number }
  versions: Record<string, number>
  groups: Record<string, number>
  ciphers: Record<string, number>
  sigalgs: Record<string, number>
  whatif: Record<string, CensusWhatIf>
}

/**
 * ClientCensus keeps the offers of the last `size` ClientHellos one listener read (no addresses, no names): one
 * Uint32Array of size × OFFER_WORDS words, allocated once, so memory is the same whatever clients send. hello() runs
 * on the accept path (the SNI peek); counting and judging happen in snapshot(), on an admin request.
 */
export class ClientCensus implements HelloSink {
  readonly size: number
  readonly #ring: Uint32Array
  #next = 0
  #held = 0
  #seen = 0

  constructor(size: number) {
    this.size = size
    this.#ring = new Uint32Array(size * OFFER_WORDS)
  }

  hello(body: Buffer): void {
    if (!readOffer(body, this.#ring, this.#next * OFFER_WORDS)) return
    this.#next = (this.#next + 1) % this.size
    if (this.#held < this.size) this.#held++
    this.#seen++
  }

  /** bytes is the memory the ring holds (fixed at construction). */
  get bytes(): number {
    return this.#ring.byteLength
  }

  /** snapshot counts the window's offers and judges them against each named policy. */
  snapshot(policies: Readonly<Record<string, PolicyOffer>>): ListenerCensus {
    const ring = this.#ring
    const versions = new Uint32Array(8)
    const groups = new Uint32Array(32)
    const sigalgs = new Uint32Array(32)
    const ciphers = new Uint32Array(CIPHER_WORDS * 32)
    const names = Object.keys(policies)
    const refused = names.map(() => new Map<RefusalReason, number>())
    for (let r = 0; r < this.#held; r++) {
      const at = r * OFFER_WORDS
      countBits(ring[at]! & 0xff, versions, 0)
      countBits(ring[at + 1]!, groups, 0)
      countBits(ring[at + 2]!, sigalgs, 0)
      for (let w = 0; w < CIPHER_WORDS; w++) countBits(ring[at + 3 + w]!, ciphers, w * 32)
      for (let p = 0; p < names.length; p++) {
        const reason = judge(policies[names[p]!]!, ring, at)
        if (reason !== undefined) refused[p]!.set(reason, (refused[p]!.get(reason) ?? 0) + 1)
      }
    }
    const whatif: Record<string, CensusWhatIf> = {}
    for (let p = 0; p < names.length; p++) {
      const reasons = Object.fromEntries(refused[p]!)
      const entry: CensusWhatIf = { refused: Object.values(reasons).reduce((a, b) => a + b, 0) }
      if (entry.refused > 0) entry.reasons = reasons
      const unjudged = policies[names[p]!]!.unjudged
      if (unjudged.length > 0) entry.unjudged = [...unjudged]
      whatif[names[p]!] = entry
    }
    return {
      clients: this.#held,
      window: { size: this.size, seen: this.#seen },
      versions: named(versions, (i) => (i === VERSION_OTHER ? "other" : VERSIONS[i]?.name)),
      groups: named(groups, (i) => (i === OTHER_BIT ? "other" : GROUPS[i]?.name)),
      ciphers: named(ciphers, (i) => (i === CIPHER_WORDS * 32 - 1 ? "other" : CIPHERS[i]?.iana)),
      sigalgs: named(sigalgs, (i) => (i === OTHER_BIT ? "other" : SIGALGS[i]?.name)),
      whatif,
    }
  }
}

function countBits(mask: number, into: Uint32Array, base: number): void {
  let m = mask >>> 0
  while (m !== 0) {
    const bit = 31 - Math.clz32(m)
    into[base + bit]!++
    m &= ~(1 << bit) >>> 0
    m >>>= 0
  }
}

/** named turns counts by bit into { name: count }, most offered first, leaving out zeros. */
function named(counts: Uint32Array, nameOf: (i: number) => string | undefined): Record<string, number> {
  const rows: [string, number][] = []
  for (let i = 0; i < counts.length; i++) {
    const n = counts[i]!
    if (n === 0) continue
    rows.push([nameOf(i) ?? "other", n])
  }
  rows.sort((a, b) => b[1] - a[1])
  return Object.fromEntries(rows)
}
