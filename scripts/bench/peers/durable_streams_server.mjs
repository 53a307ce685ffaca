// The Durable Streams reference server (@durable-streams/server 0.3.7), in memory, started the
// way its README documents (`new DurableStreamTestServer({ port, host }).start()`), so that the
// benchmark runs it beside the broker's /v1/stream routes under one load generator.
//
//   node durable_streams_server.mjs --port 4437 [--long-poll-seconds 30] [--parent-pid N]
//     [--max-seconds 3600]
//
// Nothing of the server is changed: every path is a stream, so the benchmark's streams are at
// the same /v1/stream/{name} paths as on the broker. Its options are its defaults (compression
// is on but applies only to clients that send Accept-Encoding, which the benchmark's do not),
// except the long-poll timeout, given as the broker's BROKER_DS_LONG_POLL_SECONDS (30 s both by
// default).
//
// One stream, /readyz, is created at start: the benchmark's launcher waits for `GET /readyz` to
// answer 200, which a read of an existing stream does.
//
// The process ends by itself when its parent (the benchmark) is gone, and after --max-seconds.

import { parseArgs } from "node:util";
import { DurableStreamTestServer } from "@durable-streams/server";

const { values: options } = parseArgs({
  options: {
    host: { type: "string", default: "127.0.0.1" },
    port: { type: "string" },
    "long-poll-seconds": { type: "string", default: "30" },
    "parent-pid": { type: "string" },
    "max-seconds": { type: "string", default: "3600" },
  },
});

const server = new DurableStreamTestServer({
  host: options.host,
  port: Number(options.port),
  longPollTimeout: Number(options["long-poll-seconds"]) * 1000,
});
const url = await server.start();
const ready = await fetch(`${url}/readyz`, {
  method: "PUT",
  headers: { "Content-Type": "text/plain" },
});
if (!ready.ok) {
  console.error(`durable_streams_server: PUT /readyz answered ${ready.status}`);
  process.exit(1);
}

stopWithParent(options["parent-pid"], Number(options["max-seconds"]));

/** Exit when the benchmark that started us is gone, or after maxSeconds, whichever is first. */
function stopWithParent(parentPid, maxSeconds) {
  const started = Date.now();
  // In memory: nothing to flush, so no drain either (server.stop() would wait for every open
  // keep-alive connection to close).
  const stop = () => process.exit(0);
  setInterval(() => {
    const orphaned = parentPid !== undefined && process.ppid !== Number(parentPid);
    if (orphaned || Date.now() - started > maxSeconds * 1000) stop();
  }, 1000).unref();
  for (const signal of ["SIGTERM", "SIGINT"]) process.on(signal, stop);
}
