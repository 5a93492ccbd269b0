/** @module dns-01: answers dns-01 challenges (RFC 8555 §8.4) through the operator's hook command. */
import { spawn } from "node:child_process"
import { AcmeError } from "../account.ts"
import type { ChallengeSolver, ChallengeTarget } from "./solver.ts"

/** How long the hook may run for one record. */
const HOOK_TIMEOUT_MS = 120_000

/**
 * DnsHookSolver runs `acme.dns_hook` with /bin/sh, once to set the TXT record and once to clear it, with
 * ACME_ACTION (set | clear), ACME_DOMAIN (example.com), ACME_TXT_NAME (_acme-challenge.example.com.) and
 * ACME_TXT_VALUE (the base64url SHA-256 of the key authorization) in its environment. A set must not return before
 * the record is visible to the CA (the hook waits for propagation if its DNS needs it); a non-zero exit fails it.
 */
export class DnsHookSolver implements ChallengeSolver {
  readonly type = "dns-01" as const
  readonly command: string

  constructor(command: string) {
    this.command = command
  }

  present(target: ChallengeTarget): Promise<void> {
    return this.#run("set", target)
  }

  cleanup(target: ChallengeTarget): Promise<void> {
    return this.#run("clear", target)
  }

  #run(action: "set" | "clear", target: ChallengeTarget): Promise<void> {
    const env = {
      ...process.env,
      ACME_ACTION: action,
      ACME_DOMAIN: target.name,
      ACME_TXT_NAME: `_acme-challenge.${target.name}.`,
      ACME_TXT_VALUE: target.keyAuthorization,
    }
    return new Promise((resolve, reject) => {
      const child = spawn("/bin/sh", ["-c", this.command], { env, stdio: ["ignore", "ignore", "pipe"] })
      let stderr = ""
      child.stderr.on("data", (chunk: Buffer) => {
        stderr = (stderr + chunk.toString("utf8")).slice(-500)
      })
      const timer = setTimeout(() => child.kill("SIGKILL"), HOOK_TIMEOUT_MS)
      child.on("error", (err) => {
        clearTimeout(timer)
        reject(new AcmeError("PC_ACME_DNS_HOOK", `running dns_hook (${action} ${target.name}): ${err.message}`))
      })
      child.on("close", (code, signal) => {
        clearTimeout(timer)
        if (code === 0) resolve()
        else {
          const why = signal ? `killed by ${signal}` : `exit ${code}`
          const tail = stderr.trim() ? `: ${stderr.trim().split("\n").at(-1)}` : ""
          reject(new AcmeError("PC_ACME_DNS_HOOK", `dns_hook (${action} ${target.name}) failed, ${why}${tail}`))
        }
      })
    })
  }
}
