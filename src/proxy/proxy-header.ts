/** @module proxy-header: the PROXY v1/v2 encoder as the engines know it; the code is in listeners/proxy-protocol/encode.ts. */
export * from "../listeners/proxy-protocol/encode.ts"
