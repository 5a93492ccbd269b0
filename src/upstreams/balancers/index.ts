/** @module balancers: makes the balancer an upstream's `balance` key names. */
import type { Balancer } from "../balancer.ts"
import { ConsistentHash } from "./hash.ts"
import { LeastConn } from "./least-conn.ts"
import { PowerOfTwo } from "./p2c.ts"
import { RoundRobin } from "./round-robin.ts"

export { ConsistentHash } from "./hash.ts"
export { compileHashKey, type HashKey, hashKeyOf, readCookie } from "./hash-key.ts"
export { LeastConn } from "./least-conn.ts"
export { PowerOfTwo } from "./p2c.ts"
export { RoundRobin } from "./round-robin.ts"
export { addStickyCookie, type StickyContext, StickyCookie, stickyValue } from "./sticky-cookie.ts"

/** BalancerName is a value of the upstream `balance` key. */
export type BalancerName = "round_robin" | "least_conn" | "p2c" | "hash"

/** createBalancer makes a fresh balancer (with its own state) for one upstream. */
export function createBalancer(name: BalancerName): Balancer {
  switch (name) {
    case "round_robin":
      return new RoundRobin()
    case "least_conn":
      return new LeastConn()
    case "p2c":
      return new PowerOfTwo()
    case "hash":
      return new ConsistentHash()
  }
}
