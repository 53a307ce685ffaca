// The official Durable Streams conformance suite, against the front at CONFORMANCE_TEST_URL
// (tests/e2e/test_durable_streams_conformance.py starts one on Redis, with a worker that
// delivers the subscriptions' wakes, and runs this file), its subscription tests included.
import { runConformanceTests } from "@durable-streams/server-conformance-tests"

const baseUrl = process.env.CONFORMANCE_TEST_URL
if (!baseUrl) throw new Error("CONFORMANCE_TEST_URL is required")
runConformanceTests({ baseUrl, subscriptions: true })
