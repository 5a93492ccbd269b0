/** @module default: the embedded default config: self-signed localhost on 127.0.0.1:8443, the demo backend, admin on 9901. */
import { parseConfig } from "./load.ts"
import type { Config } from "./schema.ts"

/** defaultConfigText is the YAML of the embedded default, for a backend on demoPort. */
export function defaultConfigText(demoPort: number): string {
  return `# Portcullis embedded default: used when no --config is given.
listeners:
  - name: default
    address: 127.0.0.1:8443
    tls:
      certificates:
        - { self_signed: [localhost] }
    routes:
      - { upstream: demo }
upstreams:
  demo:
    backends: ["127.0.0.1:${demoPort}"]
admin: { address: 127.0.0.1:9901 }
data_dir: .data
`
}

/** defaultConfig validates the embedded default like any other file; paths resolve against baseDir (the cwd). */
export function defaultConfig(demoPort: number, baseDir: string): Config {
  return parseConfig(defaultConfigText(demoPort), "<embedded default>", baseDir)
}
