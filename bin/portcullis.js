#!/usr/bin/env node
// The `portcullis` command. In a clone it runs the TypeScript sources (Node 24 strips the types itself, so no build
// step stands between `git clone` and `npx portcullis`); an installed package ships no src/ and runs the built dist/.
import { existsSync } from "node:fs"

const src = new URL("../src/main.ts", import.meta.url)
await import(existsSync(src) ? src.href : new URL("../dist/main.js", import.meta.url).href)
