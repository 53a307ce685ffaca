// The official Durable Streams conformance suite, against the front at CONFORMANCE_TEST_URL
// (tests/test_durable_streams_conformance.py starts one on Redis and runs this file).
import { runConformanceTests } from "@durable-streams/server-conformance-tests"

const baseUrl = process.env.CONFORMANCE_TEST_URL
if (!baseUrl) throw new Error("CONFORMANCE_TEST_URL is required")
runConformanceTests({ baseUrl })
