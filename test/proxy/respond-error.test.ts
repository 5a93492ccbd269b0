/**
 * The one classification (core/failure.ts) and the one mapping (proxy/respond-error.ts), as a table: every code the
 * code base raises or matches on, from the side it surfaces on, to kind, source, retryable and what the client gets.
 */
import assert from "node:assert/strict"
import { describe, test } from "node:test"
import { BackendError, ClientError, PortcullisError, TlsError } from "../../src/core/errors.ts"
import { classify, classifyCode, type FailureSide, knownCodes } from "../../src/core/failure.ts"
import { errorResponse } from "../../src/proxy/respond-error.ts"

type Row = readonly [code: string, side: FailureSide, kind: string, source: string, retryable: boolean, status: number]

/** status -1: nothing is sent, the stream or connection is closed. */
const CLOSED = -1

const TABLE: readonly Row[] = [
  // The connection never opened: any request may go to another backend.
  ["ECONNREFUSED", "backend", "connect", "backend", true, 502],
  ["EHOSTUNREACH", "backend", "connect", "backend", true, 502],
  ["ENETUNREACH", "backend", "connect", "backend", true, 502],
  ["UND_ERR_CONNECT_TIMEOUT", "backend", "timeout", "backend", true, 504],
  ["PC_BACKEND_CONNECT_TIMEOUT", "backend", "timeout", "backend", true, 504],
  ["PC_BACKEND_CONNECT", "backend", "connect", "backend", true, 502],
  ["PC_BACKEND_CLOSED", "backend", "connect", "backend", true, 502],
  // An HTTP/2 backend's REFUSED_STREAM: unprocessed (RFC 9113 §8.7), like a connection that never opened.
  ["PC_BACKEND_STREAM_REFUSED", "backend", "connect", "backend", true, 502],
  // An open connection broke: retried only when canRetry allows (nothing sent, or idempotent and replayable).
  ["ECONNRESET", "backend", "reset", "backend", true, 502],
  ["EPIPE", "backend", "reset", "backend", true, 502],
  ["UND_ERR_SOCKET", "backend", "reset", "backend", true, 502],
  ["UND_ERR_CLOSED", "backend", "reset", "backend", true, 502],
  ["UND_ERR_DESTROYED", "backend", "reset", "backend", false, 502],
  ["PC_BACKEND_SOCKET", "backend", "reset", "backend", false, 502],
  // The same codes on the client's connection are the client's, and it is gone.
  ["ECONNRESET", "client", "reset", "client", false, CLOSED],
  ["EPIPE", "client", "reset", "client", false, CLOSED],
  ["ETIMEDOUT", "client", "timeout", "client", false, CLOSED],
  // Waiting on the backend: the backend may be acting on the request, never retried.
  ["ETIMEDOUT", "backend", "timeout", "backend", false, 504],
  ["UND_ERR_HEADERS_TIMEOUT", "backend", "timeout", "backend", false, 504],
  ["UND_ERR_BODY_TIMEOUT", "backend", "timeout", "backend", false, 504],
  ["PC_BACKEND_TIMEOUT", "backend", "timeout", "backend", false, 504],
  // A malformed response (undici's and the lean client's parser codes).
  ["UND_ERR_HEADERS_OVERFLOW", "backend", "protocol", "backend", false, 502],
  ["UND_ERR_RES_CONTENT_LENGTH_MISMATCH", "backend", "truncated", "backend", false, 502],
  ["HPE_INVALID_CONSTANT", "backend", "protocol", "backend", false, 502],
  ["HPE_INVALID_HEADER_TOKEN", "backend", "protocol", "backend", false, 502],
  ["HPE_INVALID_CHUNK_SIZE", "backend", "protocol", "backend", false, 502],
  ["HPE_CHUNK_EXTENSIONS_OVERFLOW", "backend", "protocol", "backend", false, 502],
  ["HPE_STRICT", "backend", "protocol", "backend", false, 502],
  ["HPE_UNEXPECTED_CONTENT_LENGTH", "backend", "protocol", "backend", false, 502],
  ["HPE_INVALID_TRANSFER_ENCODING", "backend", "protocol", "backend", false, 502],
  ["HPE_INVALID_CONTENT_LENGTH", "backend", "protocol", "backend", false, 502],
  ["HPE_HEADER_OVERFLOW", "backend", "too_large", "backend", false, 502],
  // Response headers the client's protocol cannot carry.
  ["ERR_HTTP2_INVALID_HEADER_VALUE", "backend", "protocol", "backend", false, 502],
  ["ERR_HTTP_INVALID_HEADER_VALUE", "backend", "protocol", "backend", false, 502],
  ["ERR_INVALID_CHAR", "backend", "protocol", "backend", false, 502],
  // TLS toward the backend: the operator's to fix, not retried.
  ["ERR_TLS_CERT_ALTNAME_INVALID", "backend", "tls", "backend", false, 502],
  ["ERR_SSL_WRONG_VERSION_NUMBER", "backend", "tls", "backend", false, 502],
  ["UNABLE_TO_VERIFY_LEAF_SIGNATURE", "backend", "tls", "backend", false, 502],
  ["UNABLE_TO_GET_ISSUER_CERT", "backend", "tls", "backend", false, 502],
  ["UNABLE_TO_GET_ISSUER_CERT_LOCALLY", "backend", "tls", "backend", false, 502],
  ["SELF_SIGNED_CERT_IN_CHAIN", "backend", "tls", "backend", false, 502],
  ["DEPTH_ZERO_SELF_SIGNED_CERT", "backend", "tls", "backend", false, 502],
  ["CERT_HAS_EXPIRED", "backend", "tls", "backend", false, 502],
  ["CERT_NOT_YET_VALID", "backend", "tls", "backend", false, 502],
  ["CERT_UNTRUSTED", "backend", "tls", "backend", false, 502],
  ["CERT_REJECTED", "backend", "tls", "backend", false, 502],
  ["CERT_SIGNATURE_FAILURE", "backend", "tls", "backend", false, 502],
  ["HOSTNAME_MISMATCH", "backend", "tls", "backend", false, 502],
  ["EPROTO", "backend", "tls", "backend", false, 502],
  // No backend could take it.
  ["PC_NO_BACKEND", "backend", "unavailable", "backend", false, 503],
  ["PC_BACKEND_FULL", "backend", "unavailable", "backend", false, 503],
  ["PC_BACKEND_QUEUE_FULL", "backend", "unavailable", "backend", false, 503],
  ["PC_BACKEND_QUEUE_TIMEOUT", "backend", "unavailable", "backend", false, 503],
  // The client's: never counted against a backend, even when undici reports it from the backend dispatch.
  ["UND_ERR_REQ_CONTENT_LENGTH_MISMATCH", "backend", "truncated", "client", false, CLOSED],
  ["UND_ERR_ABORTED", "backend", "aborted", "client", false, CLOSED],
  ["HPE_HEADER_OVERFLOW", "client", "too_large", "client", false, 431],
  ["HPE_INVALID_METHOD", "client", "protocol", "client", false, 400],
  ["ERR_HTTP_REQUEST_TIMEOUT", "client", "timeout", "client", false, 408],
  ["ERR_SSL_WRONG_VERSION_NUMBER", "client", "tls", "client", false, 400],
  ["PC_CLIENT_SOCKET", "client", "protocol", "client", false, 400],
  ["PC_CLIENT_BODY_TIMEOUT", "client", "timeout", "client", false, 408],
  ["PC_TCP_IDLE_TIMEOUT", "client", "timeout", "client", false, CLOSED],
  ["PC_NO_ROUTE", "backend", "no_route", "client", false, 404],
  ["PC_RATE_LIMITED", "backend", "rate_limited", "client", false, 429],
  // Ours.
  ["PC_INTERNAL", "backend", "internal", "internal", false, 500],
  // Unknown: the side's.
  ["SOMETHING_NEW", "backend", "unknown", "backend", false, 502],
  ["SOMETHING_NEW", "client", "unknown", "client", false, 400],
]

describe("classify and errorResponse", () => {
  for (const [code, side, kind, source, retryable, status] of TABLE) {
    test(`${code} on the ${side} side: ${kind}, ${source}'s, ${retryable ? "" : "not "}retryable, ${status === CLOSED ? "closed" : status}`, () => {
      const failure = classify(Object.assign(new Error(code), { code }), side)
      assert.deepEqual(
        { kind: failure.kind, source: failure.source, retryable: failure.retryable },
        { kind, source, retryable },
      )
      assert.equal(failure.code, code)
      const mapped = errorResponse(failure)
      if (status === CLOSED) assert.equal(mapped.close, true)
      else {
        assert.equal(mapped.close, false)
        assert.equal(mapped.status, status)
        assert.match(mapped.body, /^[A-Z][A-Za-z ]+\n$/)
      }
    })
  }

  test("every code the classification knows has a row above", () => {
    const rows = new Set(TABLE.map((r) => r[0]))
    assert.deepEqual(
      knownCodes().filter((c) => !rows.has(c)),
      [],
    )
  })

  test("the connect phase (the backend got nothing) is known by code", () => {
    for (const code of [
      "ECONNREFUSED",
      "EHOSTUNREACH",
      "ENETUNREACH",
      "UND_ERR_CONNECT_TIMEOUT",
      "PC_BACKEND_STREAM_REFUSED",
    ]) {
      assert.equal(classifyCode(code).phase, "connect", code)
    }
    for (const code of ["ECONNRESET", "UND_ERR_SOCKET", "UND_ERR_HEADERS_TIMEOUT"]) {
      assert.notEqual(classifyCode(code).phase, "connect", code)
    }
  })

  test("an error of ours with an unknown code keeps its own source", () => {
    assert.equal(classify(new ClientError("PC_PROXY_HEADER_INVALID", "x")).source, "client")
    assert.equal(errorResponse(classify(new ClientError("PC_PROXY_HEADER_INVALID", "x"))).status, 400)
    assert.equal(classify(new BackendError("PC_BACKEND_ODD", "x"), "client").source, "backend")
    assert.equal(errorResponse(classify(new PortcullisError("PC_PROXY_HEADER_ENCODE", "x"))).status, 500)
    assert.equal(classify(new TlsError("PC_TLS_CERT_LOAD", "x")).source, "internal")
    assert.equal(classify("not an error").code, "UNKNOWN")
  })

  test("known codes classify to shared constants (no allocation on the error path)", () => {
    assert.equal(classifyCode("ECONNREFUSED"), classifyCode("ECONNREFUSED"))
    assert.ok(Object.isFrozen(classifyCode("ECONNREFUSED")))
  })

  test("the bodies are the statuses' reason phrases, as before", () => {
    assert.equal(errorResponse(classifyCode("ECONNREFUSED")).body, "Bad Gateway\n")
    assert.equal(errorResponse(classifyCode("UND_ERR_HEADERS_TIMEOUT")).body, "Gateway Timeout\n")
    assert.equal(errorResponse(classifyCode("PC_NO_BACKEND")).body, "Service Unavailable\n")
    assert.equal(errorResponse(classifyCode("HPE_HEADER_OVERFLOW", "client")).body, "Request Header Fields Too Large\n")
  })
})
