/** @module hash-functions: the fast non-cryptographic hashes the hash balancer and sticky cookies use. */

/** fnv1a32 is the 32-bit FNV-1a hash of a string's UTF-16 code units; `seed` replaces the offset basis. */
export function fnv1a32(text: string, seed = 0x811c9dc5): number {
  let h = seed >>> 0
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i)
    h = Math.imul(h, 0x01000193)
  }
  return h >>> 0
}

/** fmix32 is MurmurHash3's finaliser: a bijection on 32-bit integers in which every input bit affects every output bit. */
export function fmix32(value: number): number {
  let h = value >>> 0
  h ^= h >>> 16
  h = Math.imul(h, 0x85ebca6b)
  h ^= h >>> 13
  h = Math.imul(h, 0xc2b2ae35)
  h ^= h >>> 16
  return h >>> 0
}
