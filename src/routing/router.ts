/** @module router: maps (host, path) to a route, compiled once per config; first matching route wins. */
import type { RouteConfig } from "../config/schema.ts"

/** A compiled route: what it matches and the upstream it names. */
export interface Route {
  readonly index: number
  readonly upstream: string
  readonly exactHosts: ReadonlySet<string> | undefined
  /** Wildcard suffixes: "*.example.com" is stored as ".example.com" (one label deep, like TLS wildcards). */
  readonly wildcardSuffixes: readonly string[]
  readonly pathPrefix: string | undefined
}

/** normalizeHost lower-cases a Host header or SNI value and drops the port and a trailing dot. */
export function normalizeHost(host: string | undefined): string {
  if (!host) return ""
  let h = host
  if (h.charCodeAt(0) === 91 /* [ */) {
    const end = h.indexOf("]")
    return end > 0 ? h.slice(0, end + 1).toLowerCase() : h.toLowerCase()
  }
  const colon = h.indexOf(":")
  if (colon >= 0) h = h.slice(0, colon)
  if (h.endsWith(".")) h = h.slice(0, -1)
  return h.toLowerCase()
}

/** hostMatchesWildcard: "a.example.com" matches ".example.com" but "b.a.example.com" does not. */
function matchesWildcard(host: string, suffix: string): boolean {
  return host.length > suffix.length && host.endsWith(suffix) && host.indexOf(".") === host.length - suffix.length
}

/** Router picks the first route whose hosts and path prefix match. */
export class Router {
  readonly routes: readonly Route[]

  constructor(routes: readonly RouteConfig[]) {
    this.routes = routes.map((r, index) => {
      const hosts = r.hosts?.map((h) => normalizeHost(h))
      const exact = hosts?.filter((h) => !h.startsWith("*."))
      const wild = hosts?.filter((h) => h.startsWith("*.")).map((h) => h.slice(1)) ?? []
      const anyHost = hosts?.includes("*") ?? false
      return {
        index,
        upstream: r.upstream,
        exactHosts: hosts && !anyHost ? new Set(exact) : undefined,
        wildcardSuffixes: anyHost ? [] : wild,
        pathPrefix: r.path_prefix,
      }
    })
  }

  /** match finds the route for a normalized host and a request path; undefined means 404. */
  match(host: string, path: string): Route | undefined {
    for (const route of this.routes) {
      if (route.exactHosts && !route.exactHosts.has(host) && !this.#wildcard(route, host)) continue
      if (route.pathPrefix !== undefined && !pathHasPrefix(path, route.pathPrefix)) continue
      return route
    }
    return undefined
  }

  #wildcard(route: Route, host: string): boolean {
    for (const suffix of route.wildcardSuffixes) if (matchesWildcard(host, suffix)) return true
    return false
  }
}

/** pathHasPrefix: "/v1" matches "/v1", "/v1/x" and "/v1?q", not "/v10"; a prefix ending in "/" matches as is. */
export function pathHasPrefix(path: string, prefix: string): boolean {
  if (!path.startsWith(prefix)) return false
  if (path.length === prefix.length || prefix.endsWith("/")) return true
  const next = path.charCodeAt(prefix.length)
  return next === 47 /* / */ || next === 63 /* ? */
}
