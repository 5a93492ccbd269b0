/** @module order: one ACME order (RFC 8555 §7.4): new order, solve each authorization, finalize, download. */
import acme from "acme-client"
import { errorMessage } from "../../core/errors.ts"
import { AcmeError } from "./account.ts"
import type { ChallengeSolver, ChallengeTarget } from "./challenges/solver.ts"

/** OrderRequest: what to order and how to prove control of the names. */
export interface OrderRequest {
  client: acme.Client
  names: readonly string[]
  keyType: "ecdsa" | "rsa"
  /** in order of preference; a wildcard's authorization takes dns-01 only (RFC 8555 §7.1.3) */
  solvers: readonly ChallengeSolver[]
  /** the certificate profile asked for (ACME profiles draft), if any */
  profile?: string | undefined
  /** the CA's directory object (AcmeAccount.directory): its meta.profiles says which profiles may be asked for */
  directory?: Record<string, unknown> | undefined
  /** the ARI certificate id of the certificate this one replaces (RFC 9773 §5) */
  replaces?: string | undefined
}

/** Issued: the downloaded chain (leaf first) and the new key, PEM. */
export interface Issued {
  chainPem: string
  keyPem: string
}

/**
 * orderCertificate places one order and returns the certificate. A failure throws an AcmeError whose `problems`
 * hold the CA's problem documents (RFC 8555 §6.7) of the failed challenges, for the log.
 */
export async function orderCertificate(request: OrderRequest): Promise<Issued> {
  const { client, names } = request
  if (request.profile) {
    const problem = profileProblem(request.profile, request.directory)
    if (problem) throw new AcmeError("PC_ACME_PROFILE", `ordering a certificate for ${names.join(", ")}: ${problem}`)
  }
  const key =
    request.keyType === "rsa"
      ? await acme.crypto.createPrivateRsaKey(2048)
      : await acme.crypto.createPrivateEcdsaKey("P-256")
  const commonName = names[0]!.length <= 64 ? names[0] : undefined
  const [, csr] = await acme.crypto.createCsr({ altNames: [...names], ...(commonName ? { commonName } : {}) }, key)
  const what = names.join(", ")
  let order: acme.Order
  try {
    order = await client.createOrder({
      identifiers: names.map((value) => ({ type: "dns", value })),
      ...(request.profile ? { profile: request.profile } : {}),
      ...(request.replaces ? { replaces: request.replaces } : {}),
    } as Parameters<acme.Client["createOrder"]>[0])
  } catch (err) {
    throw new AcmeError("PC_ACME_ORDER", `ordering a certificate for ${what}: ${errorMessage(err)}`, { cause: err })
  }
  const authorizations = await client.getAuthorizations(order)
  try {
    // One after the other: a name and its wildcard share one TXT name (_acme-challenge.<name>), and a hook's
    // clear for one must not remove the record the other is still being validated against.
    for (const authz of authorizations) await solve(client, authz, request.solvers)
  } catch (err) {
    const problems = await problemsOf(client, order)
    throw new AcmeError("PC_ACME_CHALLENGE", `validating ${what}: ${errorMessage(err)}`, { cause: err, problems })
  }
  try {
    const finalized = await client.finalizeOrder(order, csr)
    const chainPem = await client.getCertificate(finalized)
    return { chainPem, keyPem: key.toString("utf8") }
  } catch (err) {
    throw new AcmeError("PC_ACME_FINALIZE", `finalizing the order for ${what}: ${errorMessage(err)}`, { cause: err })
  }
}

/**
 * profileProblem says why `profile` cannot be asked for at this CA, or undefined when it can. draft-ietf-acme-profiles
 * §3: a CA lists its profiles in the directory's meta.profiles (name -> description) and rejects a newOrder naming
 * another one (invalidProfile); a CA without the extension ignores the field and issues its default, which is not
 * what the config asked for either. So in both cases no order is placed, as Caddy (acmez) does, and the log says why.
 */
export function profileProblem(profile: string, directory: Record<string, unknown> | undefined): string | undefined {
  const meta = directory?.["meta"]
  const profiles = typeof meta === "object" && meta !== null ? (meta as Record<string, unknown>)["profiles"] : undefined
  if (typeof profiles !== "object" || profiles === null || Object.keys(profiles).length === 0) {
    return `acme.profile is "${profile}", but the CA's directory lists no profiles (draft-ietf-acme-profiles): it would issue its default certificate; remove acme.profile or use a CA that offers it`
  }
  const offered = Object.keys(profiles)
  if (offered.includes(profile)) return undefined
  return `acme.profile is "${profile}", which the CA does not offer (its directory lists ${offered.map((p) => `"${p}"`).join(", ")}); set acme.profile to one of them`
}

/** solve proves control of one authorization's name with the first solver whose type the CA offers. */
async function solve(client: acme.Client, authz: acme.Authorization, solvers: readonly ChallengeSolver[]) {
  if (authz.status === "valid") return
  const name = authz.identifier.value
  const usable = authz.wildcard ? solvers.filter((s) => s.type === "dns-01") : solvers
  let solver: ChallengeSolver | undefined
  let challenge: acme.Authorization["challenges"][number] | undefined
  for (const s of usable) {
    challenge = authz.challenges.find((c) => c.type === s.type)
    if (challenge) {
      solver = s
      break
    }
  }
  if (!solver || !challenge) {
    const offered = authz.challenges.map((c) => c.type).join(", ")
    throw new AcmeError(
      "PC_ACME_NO_CHALLENGE",
      `${authz.wildcard ? "*." : ""}${name}: none of the challenges offered (${offered}) is configured (${solvers.map((s) => s.type).join(", ") || "none"})`,
    )
  }
  const target: ChallengeTarget = {
    name,
    token: challenge.token,
    keyAuthorization: await client.getChallengeKeyAuthorization(challenge),
  }
  await solver.present(target)
  try {
    await client.completeChallenge(challenge)
    await client.waitForValidStatus(challenge)
  } finally {
    await solver.cleanup(target).catch(() => {})
  }
}

/** problemsOf reads the error of every invalid challenge of an order: the CA's problem documents. */
async function problemsOf(client: acme.Client, order: acme.Order): Promise<unknown[]> {
  try {
    const authorizations = await client.getAuthorizations(order)
    return authorizations.flatMap((a) =>
      a.challenges.flatMap((c) =>
        c.error ? [{ identifier: a.identifier.value, type: c.type, ...(c.error as object) }] : [],
      ),
    )
  } catch {
    return []
  }
}
