/** FileCertificateStorage runs the CertificateStorage contract (storage.contract.ts): two objects on one folder. */
import { mkdtempSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { FileCertificateStorage } from "../../../src/tls/acme/file-storage.ts"
import { runStorageContract } from "./storage.contract.ts"

runStorageContract({
  name: "FileCertificateStorage",
  backing: async () => {
    const dir = mkdtempSync(join(tmpdir(), "pc-file-storage-"))
    return { storages: [new FileCertificateStorage(dir), new FileCertificateStorage(dir)] }
  },
})
