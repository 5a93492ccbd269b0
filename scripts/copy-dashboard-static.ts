/**
 * Copies the dashboard's page (src/admin/dashboard/static: html, css, js) next to the built module in dist/, which
 * tsc does not do: `npm run build` runs it after tsc, so the installed package serves the same page as a clone.
 */
import { cpSync } from "node:fs"
import { join } from "node:path"

const root = join(import.meta.dirname, "..")
cpSync(join(root, "src/admin/dashboard/static"), join(root, "dist/admin/dashboard/static"), { recursive: true })
