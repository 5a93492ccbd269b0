/** docs/config-reference.md stays generated from the schema, and the generator copes with any key the schema grows. */
import assert from "node:assert/strict"
import { readFileSync } from "node:fs"
import { describe, test } from "node:test"
import { z } from "zod"
import { configRows, REFERENCE_FILE, renderConfigReference } from "../../scripts/gen-config-reference.ts"
import { configSchema, duration, size } from "../../src/config/schema.ts"

describe("docs/config-reference.md", () => {
  test("is up to date with src/config/schema.ts (run node scripts/gen-config-reference.ts if not)", () => {
    const current = readFileSync(REFERENCE_FILE, "utf8")
    const fresh = renderConfigReference()
    if (current !== fresh) {
      const a = current.split("\n")
      const b = fresh.split("\n")
      const line = a.findIndex((text, i) => text !== b[i])
      assert.fail(
        `docs/config-reference.md is out of date from line ${line + 1}: run node scripts/gen-config-reference.ts\n` +
          `  file:   ${a[line] ?? "(end)"}\n  schema: ${b[line] ?? "(end)"}`,
      )
    }
  })

  test("has a row for every top-level section and every key of a listener", () => {
    const paths = new Set(configRows().map((r) => r.path))
    const shape = configSchema.def.shape
    for (const key of Object.keys(shape)) assert.ok(paths.has(key), `no row for ${key}`)
    for (const key of ["name", "address", "engine", "tls", "routes", "upstream", "limits"]) {
      assert.ok(paths.has(`listeners[].${key}`), `no row for listeners[].${key}`)
    }
    assert.ok(paths.has("upstreams.<name>.backends[].address"))
    assert.ok(paths.has("listeners[].tls.certificates[].self_signed"))
  })

  test("rows carry type, default and description from the schema", () => {
    const rows = new Map(configRows().map((r) => [r.path, r]))
    assert.deepEqual(rows.get("listeners[].engine"), {
      path: "listeners[].engine",
      type: "`http` | `tcp`",
      default: "`http`",
      description: "http (L7) or tcp (L4)",
    })
    assert.deepEqual(rows.get("listeners[].address"), {
      path: "listeners[].address",
      type: '"host:port"',
      default: "**required**",
      description: '"host:port" to bind',
    })
    assert.equal(rows.get("upstreams.<name>.timeouts.connect")?.type, "duration")
    assert.equal(rows.get("upstreams.<name>.timeouts.connect")?.default, "`5s`")
    assert.equal(rows.get("listeners[].limits.max_header_size")?.type, "size")
    assert.equal(rows.get("listeners[].redirect_https")?.type, "integer 1–65535")
    assert.equal(rows.get("listeners[].redirect_https")?.default, "—")
    assert.equal(rows.get("upstreams.<name>.backends")?.type, 'list of "host:port" or mappings')
  })
})

describe("the generator", () => {
  test("walks keys of every kind a schema may grow, without a dedicated case for each", () => {
    const node: z.ZodType = z.lazy(() => z.object({ child: z.string().optional() }))
    const grown = z
      .object({
        nothing_special: z.string().describe("a plain string (required)"),
        maybe: z.number().nullable().optional().describe("nullable number"),
        fixed: z.literal("v2").default("v2").describe("a literal"),
        when: duration().prefault("1m").describe("a duration (default 1m)"),
        how_big: size().prefault("1MiB").describe("a size"),
        tree: node.describe("lazy section"),
        both: z
          .intersection(z.object({ left: z.boolean() }), z.object({ right: z.boolean().default(true) }))
          .optional()
          .describe("intersection"),
        named: z.record(z.string(), z.union([z.string(), z.object({ port: z.number().int().gt(0).lt(65536) })])),
        odd: z.date().optional().describe("a type the generator has no case for"),
        flags: z
          .array(z.enum(["a", "b"]))
          .default(["a"])
          .describe("a list with a default"),
        frozen: z.object({ x: z.number() }).readonly().describe("readonly"),
      })
      .strict()
    const rows = new Map(configRows(grown).map((r) => [r.path, r]))
    assert.deepEqual(
      [...rows.keys()],
      [
        "nothing_special",
        "maybe",
        "fixed",
        "when",
        "how_big",
        "tree",
        "tree.child",
        "both",
        "both.left",
        "both.right",
        "named",
        "named.<name>.port",
        "odd",
        "flags",
        "frozen",
        "frozen.x",
      ],
    )
    assert.deepEqual(rows.get("nothing_special"), {
      path: "nothing_special",
      type: "string",
      default: "**required**",
      description: "a plain string",
    })
    assert.equal(rows.get("maybe")?.type, "number or null")
    assert.equal(rows.get("maybe")?.default, "—")
    assert.equal(rows.get("fixed")?.type, "`v2`")
    assert.equal(rows.get("when")?.type, "duration")
    assert.equal(rows.get("when")?.description, "a duration")
    assert.equal(rows.get("how_big")?.type, "size")
    assert.equal(rows.get("how_big")?.default, "`1MiB`")
    assert.equal(rows.get("named")?.type, "mapping of name → string or mapping")
    assert.equal(rows.get("named.<name>.port")?.type, "integer 1–65535")
    assert.equal(rows.get("odd")?.type, "date")
    assert.equal(rows.get("flags")?.type, "list of `a` | `b`")
    assert.equal(rows.get("flags")?.default, "`[a]`")
    assert.equal(rows.get("both.right")?.default, "`true`")

    const markdown = renderConfigReference(grown)
    assert.match(markdown, /^## nothing_special$/m)
    assert.match(markdown, /^\| `flags` \| list of `a` \\\| `b` \| `\[a\]` \| a list with a default \|$/m)
  })
})
