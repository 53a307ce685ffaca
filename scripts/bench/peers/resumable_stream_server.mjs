// Vercel's resumable-stream (2.2.13, Redis through the `redis` package it documents) behind the
// HTTP and SSE contract that the benchmark's readers use against the broker's front, so that
// both systems run under one load generator and one accounting.
//
//   REDIS_URL=redis://127.0.0.1:6379/0 node resumable_stream_server.mjs --port 8200 \
//     --key-prefix bench1234 [--parent-pid N] [--max-seconds 3600]
//
// What a reader sees is what the broker serves:
//
//   GET /v1/conversations/{cid}/stream   (Last-Event-ID header or ?last_event_id=)
//   -> 200 text/event-stream: "retry: 1000", then frames "id: ...\nevent: ...\ndata: {...}"
//      from just after the given id (from the start without one), then the live ones, and a
//      ": keepalive" comment every --keepalive-seconds.
//
// Each conversation is one resumable stream, written by one producer in this process (the
// library's model: the process that runs the generation owns the stream and keeps its chunks
// in memory). Every reader is a GET that resumes it with the documented `resumeExistingStream`:
// the library asks the producer over Redis pub/sub, the producer publishes the buffered text
// from the reader's position, then every later chunk, to a channel of that reader's own.
//
// Where resumable-stream's model differs from the broker's contract, and what this does:
//
// - Resume is by position in characters, not by event id. Each frame's id is therefore the
//   stream's length in characters just after that frame, 16 digits wide (the id's own width
//   is fixed so it can count itself): a Last-Event-ID is then exactly the `skipCharacters`
//   that resumes after that frame. The ids are not Redis entry ids.
// - The producer is fed by the benchmark's appender over the /bench/ routes below, standing in
//   for the LLM whose tokens reach the producer in a real deployment: one POST per appender
//   tick carries that tick's deltas for every conversation due (the broker's appender writes
//   the same tick in one Redis round trip). Parsing those POSTs is counted in this process's
//   CPU; the broker's appender is a process apart, and only its Redis side is counted.
// - A chunk is one SSE frame (one event), as the appender writes one delta per append.
// - The stream the producer's own request would read (the POSTing client's, in the AI SDK's
//   setup) has no client here: every benchmark reader resumes through Redis, so it is drained
//   and dropped. A conversation's run never ends the stream (its `run.completed` is a frame
//   like the others), since the broker's conversation stream does not end either.
// - There is no snapshot, no cancel, no authentication and no limits: only the read path.
//
// The process ends by itself when its parent (the benchmark) is gone, and after --max-seconds.

import http from "node:http";
import { parseArgs } from "node:util";
import { createClient } from "redis";
import { createResumableStreamContext } from "resumable-stream";

const { values: options } = parseArgs({
  options: {
    host: { type: "string", default: "127.0.0.1" },
    port: { type: "string" },
    "key-prefix": { type: "string", default: "resumable-stream" },
    "keepalive-seconds": { type: "string", default: "15" },
    "parent-pid": { type: "string" },
    "max-seconds": { type: "string", default: "3600" },
  },
});

const ID_WIDTH = 16;
const SSE_HEADERS = {
  "Content-Type": "text/event-stream; charset=utf-8",
  "Cache-Control": "no-cache, no-transform",
  "X-Accel-Buffering": "no",
};
const CID = /^\/v1\/conversations\/([A-Za-z0-9_-]{1,128})\/stream$/;

const redisUrl = process.env.REDIS_URL;
if (!redisUrl) {
  console.error("resumable_stream_server: REDIS_URL is not set");
  process.exit(2);
}
// Named so that the benchmark counts this process's Redis connections as it counts a front's.
const clientName = `resumable-stream:front:${process.pid}`;
const publisher = createClient({ url: redisUrl, name: clientName });
const subscriber = createClient({ url: redisUrl, name: clientName });
await Promise.all([publisher.connect(), subscriber.connect()]);
// Our own clients (the README's "pass in your own Redis publisher and subscriber") only to name
// them; they are the `redis` package's, as the library's defaults are.
const context = createResumableStreamContext({
  waitUntil: null,
  keyPrefix: options["key-prefix"],
  publisher,
  subscriber,
});

/** Every conversation's producer: the controller of the stream it feeds, and its length. */
const producers = new Map();
/** Open SSE responses, for the keepalive sweep. */
const openResponses = new Set();

async function openProducer(cid) {
  let controller;
  const source = new ReadableStream({
    start(c) {
      controller = c;
    },
  });
  const original = await context.createNewResumableStream(cid, () => source);
  const producer = { controller, position: 0, runId: `r_${cid}` };
  producers.set(cid, producer);
  drain(original);
  return producer;
}

async function drain(stream) {
  const reader = stream.getReader();
  for (;;) {
    const { done } = await reader.read();
    if (done) return;
  }
}

/** Appends one frame to a producer's stream; returns its id (the length just after it). */
function append(producer, event, data) {
  const body = `\nevent: ${event}\ndata: ${JSON.stringify(data)}\n\n`;
  const position = producer.position + 4 + ID_WIDTH + body.length;
  const id = String(position).padStart(ID_WIDTH, "0");
  producer.position = position;
  producer.controller.enqueue(`id: ${id}${body}`);
  return id;
}

function sendJson(res, status, value) {
  const body = JSON.stringify(value);
  res.writeHead(status, {
    "Content-Type": "application/json",
    "Content-Length": Buffer.byteLength(body),
  });
  res.end(body);
}

function sendError(res, status, code, message) {
  sendJson(res, status, { error: { code, message } });
}

async function readBody(req) {
  const parts = [];
  for await (const part of req) parts.push(part);
  return JSON.parse(Buffer.concat(parts).toString("utf8"));
}

async function serveStream(req, res, cid, url) {
  const lastEventId = req.headers["last-event-id"] ?? url.searchParams.get("last_event_id");
  let skip = 0;
  if (lastEventId) {
    if (!/^[0-9]{1,16}$/.test(lastEventId)) {
      sendError(res, 400, "invalid_last_event_id", "not an id of this server");
      return;
    }
    skip = Number(lastEventId);
  }
  let stream;
  try {
    stream = await context.resumeExistingStream(cid, skip);
  } catch (error) {
    // The library gives up when the producer does not answer within a second.
    if (!res.headersSent) sendError(res, 503, "resume_failed", String(error?.message ?? error));
    return;
  }
  if (stream === undefined) {
    sendError(res, 404, "conversation_not_found", cid);
    return;
  }
  if (stream === null) {
    res.writeHead(204);
    res.end();
    return;
  }
  const reader = stream.getReader();
  if (req.socket.destroyed) {
    reader.cancel().catch(() => {});
    return;
  }
  res.writeHead(200, SSE_HEADERS);
  res.write("retry: 1000\n\n");
  openResponses.add(res);
  let closed = false;
  res.on("close", () => {
    closed = true;
    openResponses.delete(res);
    reader.cancel().catch(() => {});
  });
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done || closed) break;
      // Wait for the socket to drain, as piping a web stream into a Node response does.
      if (!res.write(value)) await new Promise((resolve) => res.once("drain", resolve));
    }
  } catch {
    // The reader was cancelled because the client went away.
  }
  if (!closed) res.end();
}

async function bench(req, res, path, url) {
  if (req.method !== "POST") {
    sendError(res, 405, "method_not_allowed", path);
    return;
  }
  const body = await readBody(req);
  if (path === "/bench/open") {
    // A user message and a started run in every conversation, as the broker's appender opens.
    await Promise.all(
      body.cids.map(async (cid) => {
        const producer = await openProducer(cid);
        append(producer, "message", {
          message_id: `m_${cid}`,
          role: "user",
          content: "bench",
          run_id: producer.runId,
        });
        append(producer, "run.started", {
          run_id: producer.runId,
          message_id: `m_a_${cid}`,
          model: "simulated",
        });
      }),
    );
    sendJson(res, 200, { opened: body.cids.length });
    return;
  }
  if (path === "/bench/append") {
    // [[cid, text], ...]: one delta each; ?ids=1 answers the ids given (for a resume storm).
    const ids = [];
    for (const [cid, text] of body) {
      const producer = producers.get(cid);
      if (producer === undefined) {
        sendError(res, 404, "conversation_not_found", cid);
        return;
      }
      ids.push(append(producer, "delta", { run_id: producer.runId, text, channel: "content" }));
    }
    if (url.searchParams.get("ids") === "1") sendJson(res, 200, { ids });
    else {
      res.writeHead(204);
      res.end();
    }
    return;
  }
  if (path === "/bench/finish") {
    for (const cid of body.cids) {
      const producer = producers.get(cid);
      if (producer !== undefined) {
        append(producer, "run.completed", { run_id: producer.runId, finish_reason: "stop" });
      }
    }
    res.writeHead(204);
    res.end();
    return;
  }
  sendError(res, 404, "not_found", path);
}

async function handle(req, res) {
  const url = new URL(req.url ?? "/", "http://localhost");
  const path = url.pathname;
  if (path === "/readyz" || path === "/healthz") {
    await publisher.ping();
    sendJson(res, 200, { status: "ready" });
    return;
  }
  if (path.startsWith("/bench/")) {
    await bench(req, res, path, url);
    return;
  }
  const match = CID.exec(path);
  if (match !== null && req.method === "GET") {
    await serveStream(req, res, match[1], url);
    return;
  }
  sendError(res, 404, "not_found", path);
}

const server = http.createServer((req, res) => {
  handle(req, res).catch((error) => {
    console.error("resumable_stream_server:", error);
    if (!res.headersSent) sendError(res, 500, "internal", String(error?.message ?? error));
    else res.destroy();
  });
});
server.listen({ host: options.host, port: Number(options.port), backlog: 4096 });

// One sweep writes every open stream's keepalive: no timer per connection.
setInterval(
  () => {
    for (const res of openResponses) res.write(": keepalive\n\n");
  },
  Number(options["keepalive-seconds"]) * 1000,
).unref();

stopWithParent(options["parent-pid"], Number(options["max-seconds"]));

/** Exit when the benchmark that started us is gone, or after maxSeconds, whichever is first. */
function stopWithParent(parentPid, maxSeconds) {
  const started = Date.now();
  setInterval(() => {
    const orphaned = parentPid !== undefined && process.ppid !== Number(parentPid);
    if (orphaned || Date.now() - started > maxSeconds * 1000) process.exit(0);
  }, 1000).unref();
  for (const signal of ["SIGTERM", "SIGINT"]) process.on(signal, () => process.exit(0));
}
