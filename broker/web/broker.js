// broker.js: the browser side of the LLM stream broker, as one ES module with no dependencies.
//
//   import { openConversation } from "/broker.js";
//   const conversation = openConversation("", "demo", {
//     onSnapshot(snapshot) { /* render snapshot.messages */ },
//     onEvent(name, data, id) { /* "message", "run.started", "delta", "run.completed", ... */ },
//     onStatus(status, detail) { /* "connecting", "live", "reconnecting", "waiting", ... */ },
//   });
//   await conversation.send("Hello");
//   await conversation.cancel();
//
// A conversation is rendered from its snapshot at once, then streamed on from the snapshot's
// last_event_id. Dropped connections resume from the last event id seen, so nothing is repeated
// and nothing is lost; a `reset` from the broker reloads the snapshot. Closing the page never
// stops a run: only cancel() does, from any tab or device.

/**
 * @typedef {{message_id: string, role: "user" | "assistant", content: string, reasoning: string,
 *   run_id: string, status: string, error?: {code: string, message: string},
 *   parts?: Array<Record<string, unknown>>}} SnapshotMessage
 * @typedef {{conversation_id: string, messages: SnapshotMessage[], active_run_id: string | null,
 *   last_event_id: string | null}} Snapshot
 * @typedef {{conversation_id: string, message_id: string, run_id: string, event_id: string}} Accepted
 * @typedef {{run_id: string, status: string, event_id?: string}} CancelState
 * @typedef {{default: string, models: Array<{name: string}>}} ModelList
 * @typedef {"connecting" | "live" | "reconnecting" | "waiting" | "unauthorized" | "forbidden"
 *   | "failed" | "closed"} Status
 * @typedef {object} Handlers
 * @property {(snapshot: Snapshot) => void} [onSnapshot] render this state (first, and after a reset)
 * @property {(name: string, data: any, id: string | null) => void} [onEvent] every stream event
 * @property {(status: Status, detail?: BrokerError) => void} [onStatus] the connection's state
 * @property {(data: {reason: string, earliest_event_id: string | null}) => void} [onReset]
 *   the position was trimmed away: what was shown is replaced by a fresh snapshot
 * @property {(error: BrokerError) => void} [onError] an error worth showing (401, 403, 429, ...)
 * @typedef {object} Options
 * @property {string | null} [token] a JWT sent as `Authorization: Bearer` on requests
 * @property {number} [maxBackoffMs] the longest wait between reconnect attempts (default 15000)
 */

/** The events a conversation's stream carries; others are passed to onEvent too if listed. */
export const EVENT_NAMES = [
  "message", "run.started", "delta", "run.completed", "run.cancelled", "run.failed",
  "tool.call", "tool.result", "data",
];
export const TERMINAL_EVENTS = ["run.completed", "run.cancelled", "run.failed"];

/** An answer of the broker that is not a success: `status` is the HTTP status (0: no answer). */
export class BrokerError extends Error {
  /**
   * @param {number} status
   * @param {string} code the JSON error code, e.g. "run_active", "unauthorized", "network"
   * @param {string} message
   * @param {number | null} [retryAfter] seconds, from Retry-After
   */
  constructor(status, code, message, retryAfter = null) {
    super(message);
    this.name = "BrokerError";
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter;
  }
}

const path = (cid) => `/v1/conversations/${encodeURIComponent(cid)}`;

/**
 * @param {string} base the broker's origin ("" for the page's own)
 * @param {string} method
 * @param {string} url
 * @param {{token?: string | null, body?: unknown, headers?: Record<string, string>,
 *   signal?: AbortSignal}} [options]
 */
async function request(base, method, url, options = {}) {
  const headers = { Accept: "application/json", ...(options.headers || {}) };
  if (options.token) headers.Authorization = `Bearer ${options.token}`;
  let body;
  if (options.body !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(options.body);
  }
  let response;
  try {
    response = await fetch(base + url, {
      method, headers, body, credentials: "include", cache: "no-store", signal: options.signal,
    });
  } catch (error) {
    if (error && error.name === "AbortError") throw error;
    throw new BrokerError(0, "network", `no answer from the broker (${error})`);
  }
  if (response.ok) return response;
  throw await errorOf(response);
}

/** @param {Response} response */
async function errorOf(response) {
  let code = `http_${response.status}`;
  let message = response.statusText || "request refused";
  try {
    const body = await response.json();
    if (body && body.error) ({ code, message } = body.error);
  } catch { /* not JSON: keep the status line */ }
  const retry = Number.parseFloat(response.headers.get("Retry-After") || "");
  return new BrokerError(response.status, code, message, Number.isFinite(retry) ? retry : null);
}

/**
 * The merged conversation, or null when it does not exist (yet).
 * @param {string} base @param {string} cid @param {{token?: string | null}} [options]
 * @returns {Promise<Snapshot | null>}
 */
export async function snapshot(base, cid, options = {}) {
  try {
    return await (await request(base, "GET", path(cid), options)).json();
  } catch (error) {
    if (error instanceof BrokerError && error.code === "conversation_not_found") return null;
    throw error;
  }
}

/**
 * Post a message; the answer is generated by a worker and arrives on the stream. A retry after
 * a lost answer reuses the idempotency key, so it never starts a second run.
 * @param {string} base @param {string} cid @param {string} content
 * @param {{model?: string, params?: Record<string, unknown>, idempotencyKey?: string,
 *   token?: string | null}} [options]
 * @returns {Promise<Accepted>}
 */
export async function send(base, cid, content, options = {}) {
  const body = { content };
  if (options.model) body.model = options.model;
  if (options.params && Object.keys(options.params).length) body.params = options.params;
  const key = options.idempotencyKey || newKey();
  for (let attempt = 1; ; attempt++) {
    try {
      const response = await request(base, "POST", `${path(cid)}/messages`, {
        token: options.token, body, headers: { "Idempotency-Key": key },
      });
      return await response.json();
    } catch (error) {
      const retriable = error instanceof BrokerError && (error.status === 0 || error.status === 503);
      if (!retriable || attempt >= 3) throw error;
      await sleep(500 * attempt);
    }
  }
}

/**
 * Stop a run (the active one unless `runId`), from any tab or device. With `wait`, resolves
 * once the run has ended, with its final status.
 * @param {string} base @param {string} cid
 * @param {{runId?: string | null, wait?: boolean, token?: string | null}} [options]
 * @returns {Promise<CancelState>}
 */
export async function cancel(base, cid, options = {}) {
  let url = options.runId ? `${path(cid)}/runs/${encodeURIComponent(options.runId)}/cancel`
    : `${path(cid)}/cancel`;
  if (options.wait) url += "?wait=true";
  return (await request(base, "POST", url, { token: options.token })).json();
}

/** @param {string} base @param {{token?: string | null}} [options] @returns {Promise<ModelList>} */
export async function listModels(base, options = {}) {
  return (await request(base, "GET", "/v1/models", options)).json();
}

/**
 * Trade a token for the session cookie, which EventSource sends (it cannot set headers).
 * @param {string} base @param {string} token
 */
export async function startSession(base, token) {
  await request(base, "POST", "/v1/session", { token });
}

/** Forget the session cookie. @param {string} base */
export async function endSession(base) {
  await request(base, "DELETE", "/v1/session");
}

function newKey() {
  if (globalThis.crypto && crypto.randomUUID) return crypto.randomUUID();
  return `k-${Date.now()}-${Math.random().toString(36).slice(2)}`;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** "1731000000000-3" as a pair of BigInts, to order stream ids. */
function position(id) {
  const [ms, seq] = id.split("-");
  return [BigInt(ms), BigInt(seq)];
}

/** @param {string} a @param {string} b */
function isAfter(a, b) {
  const [am, as] = position(a);
  const [bm, bs] = position(b);
  return am > bm || (am === bm && as > bs);
}

/**
 * Open a conversation: its snapshot first (onSnapshot), then its live events (onEvent), resumed
 * by itself after every disconnect from the last event id seen.
 * @param {string} base the broker's origin ("" for the page's own)
 * @param {string} cid
 * @param {Handlers} [handlers]
 * @param {Options} [options]
 */
export function openConversation(base, cid, handlers = {}, options = {}) {
  const conversation = new Conversation(base, cid, handlers, options);
  conversation.start();
  return conversation;
}

export class Conversation {
  /** @param {string} base @param {string} cid @param {Handlers} handlers @param {Options} options */
  constructor(base, cid, handlers, options) {
    this.base = base;
    this.cid = cid;
    this.handlers = handlers;
    this.token = options.token || null;
    this.maxBackoffMs = options.maxBackoffMs || 15000;
    /** @type {string | null} the last event id rendered: where the stream resumes */
    this.lastEventId = null;
    /** @type {string | null} the run in progress, if any */
    this.activeRunId = null;
    /** @type {Status} */
    this.status = "connecting";
    this.closed = false;
    /** @type {EventSource | null} */
    this.source = null;
    this.failures = 0;
    this.timer = null;
    /** true while the stream waits for a conversation that does not exist yet */
    this.waiting = false;
  }

  start() {
    this.#load();
  }

  /** Stop streaming; nothing is cancelled. */
  close() {
    this.closed = true;
    this.#closeSource();
    clearTimeout(this.timer);
    this.#status("closed");
  }

  /**
   * Use a (new) token: exchanged for the session cookie, then the stream resumes where it was.
   * @param {string} token
   */
  async setToken(token) {
    await startSession(this.base, token);
    this.token = token;
    if (this.source === null && !this.closed) this.#reconnectNow();
  }

  /**
   * @param {string} content
   * @param {{model?: string, params?: Record<string, unknown>}} [options]
   */
  async send(content, options = {}) {
    const accepted = await send(this.base, this.cid, content, { ...options, token: this.token });
    // A conversation nobody may follow yet has no stream open: start it now.
    if (this.status === "waiting" && this.source === null) this.#reconnectNow();
    return accepted;
  }

  /** @param {{runId?: string | null, wait?: boolean}} [options] */
  async cancel(options = {}) {
    return cancel(this.base, this.cid, { ...options, token: this.token });
  }

  /** @param {Status} status @param {BrokerError} [detail] */
  #status(status, detail) {
    this.status = status;
    this.handlers.onStatus?.(status, detail);
  }

  #error(error) {
    this.handlers.onError?.(error);
  }

  async #load() {
    clearTimeout(this.timer);
    let state;
    try {
      state = await snapshot(this.base, this.cid, { token: this.token });
    } catch (error) {
      this.#failed(error instanceof BrokerError ? error : new BrokerError(0, "network", String(error)));
      return;
    }
    if (this.closed) return;
    if (state === null) {
      // Nothing yet: the stream waits (keep-alives) until someone, this tab or another, sends
      // the first message, then delivers it like any event.
      this.lastEventId = null;
      this.activeRunId = null;
      this.handlers.onSnapshot?.({
        conversation_id: this.cid, messages: [], active_run_id: null, last_event_id: null,
      });
      this.#status("waiting");
      this.waiting = true;
      this.#open();
      return;
    }
    this.waiting = false;
    this.lastEventId = state.last_event_id;
    this.activeRunId = state.active_run_id;
    this.handlers.onSnapshot?.(state);
    this.#open();
  }

  #streamUrl() {
    let url = `${this.base}${path(this.cid)}/stream`;
    if (this.lastEventId) url += `?last_event_id=${encodeURIComponent(this.lastEventId)}`;
    return url;
  }

  #open() {
    this.#closeSource();
    if (this.closed) return;
    if (this.status !== "reconnecting" && !this.waiting) this.#status("connecting");
    const source = new EventSource(this.#streamUrl(), { withCredentials: true });
    this.source = source;
    source.onopen = () => {
      this.failures = 0;
      this.#status(this.waiting ? "waiting" : "live");
    };
    for (const name of EVENT_NAMES) {
      source.addEventListener(name, (event) => this.#onFrame(name, /** @type {MessageEvent} */ (event)));
    }
    source.addEventListener("reset", (event) => this.#onReset(/** @type {MessageEvent} */ (event)));
    // "error" is both the server's `event: error` frame and the browser's connection error.
    source.addEventListener("error", (event) => {
      if (event instanceof MessageEvent) this.#onServerError(event);
      else this.#onConnectionError(source);
    });
  }

  #closeSource() {
    if (this.source) {
      this.source.close();
      this.source = null;
    }
  }

  /** @param {string} name @param {MessageEvent} event */
  #onFrame(name, event) {
    const id = event.lastEventId || null;
    // A replay after a manual reconnect may overlap what was rendered: render each event once.
    if (id && this.lastEventId && !isAfter(id, this.lastEventId)) return;
    let data;
    try {
      data = JSON.parse(event.data);
    } catch {
      return;
    }
    if (id) this.lastEventId = id;
    if (this.waiting) {
      this.waiting = false;
      this.#status("live");
    }
    if (name === "message") this.activeRunId = data.run_id;
    else if (TERMINAL_EVENTS.includes(name) && data.run_id === this.activeRunId) this.activeRunId = null;
    this.handlers.onEvent?.(name, data, id);
  }

  /** @param {MessageEvent} event */
  #onReset(event) {
    this.#closeSource();
    let data = { reason: "reset", earliest_event_id: null };
    try {
      data = JSON.parse(event.data);
    } catch { /* keep the default */ }
    this.handlers.onReset?.(data);
    this.lastEventId = null;
    this.#load();
  }

  /** @param {MessageEvent} event */
  #onServerError(event) {
    this.#closeSource();
    let code = "stream_error";
    let message = "the stream ended with an error";
    try {
      ({ code, message } = JSON.parse(event.data));
    } catch { /* keep the defaults */ }
    const error = new BrokerError(code === "token_expired" ? 401 : 0, code, message);
    if (code === "token_expired") {
      this.#status("unauthorized", error);
      this.#error(error);
      return;
    }
    if (code === "conversation_deleted") {
      // Nothing of it is left: show it empty, as a conversation not created yet.
      this.#error(error);
      this.lastEventId = null;
      this.activeRunId = null;
      this.#load();
      return;
    }
    this.#error(error);
    this.#retryLater(null);
  }

  /** @param {EventSource} source */
  #onConnectionError(source) {
    if (source !== this.source) return;
    if (source.readyState === EventSource.CONNECTING) {
      // The browser reconnects by itself, sending Last-Event-ID.
      this.#status("reconnecting");
      return;
    }
    // The browser gave up (an answer other than 200): find out why, then decide.
    this.#closeSource();
    this.#probe();
  }

  /** Ask for the stream once with fetch, which sees the status and body EventSource hides. */
  async #probe() {
    const controller = new AbortController();
    try {
      const headers = { Accept: "text/event-stream" };
      if (this.token) headers.Authorization = `Bearer ${this.token}`;
      const response = await fetch(this.#streamUrl(), {
        headers, credentials: "include", cache: "no-store", signal: controller.signal,
      });
      if (response.ok) {
        controller.abort();
        this.#reconnectNow();
        return;
      }
      this.#failed(await errorOf(response));
    } catch (error) {
      if (error && error.name === "AbortError") return;
      this.#failed(new BrokerError(0, "network", `no answer from the broker (${error})`));
    }
  }

  /** @param {BrokerError} error */
  #failed(error) {
    if (this.closed) return;
    if (error.status === 401) {
      this.#status("unauthorized", error);
      this.#error(error);
      return;
    }
    if (error.status === 403) {
      this.#status("forbidden", error);
      this.#error(error);
      return;
    }
    if (error.code === "conversation_not_found") {
      if (this.waiting) {
        // Not even followed: somebody else owns the id. Look again later.
        this.#status("waiting");
        clearTimeout(this.timer);
        this.timer = setTimeout(() => this.#load(), 2000);
        return;
      }
      // Gone (expired, or never visible to this token): show it empty and wait for a message.
      this.#load();
      return;
    }
    if (error.status === 0 || error.status === 429 || error.status >= 500) {
      if (error.status !== 0) this.#error(error);
      this.#retryLater(error.retryAfter);
      return;
    }
    this.#status("failed", error);
    this.#error(error);
  }

  /** @param {number | null} retryAfter seconds the broker asked for, if any */
  #retryLater(retryAfter) {
    this.failures += 1;
    const backoff = Math.min(this.maxBackoffMs, 500 * 2 ** (this.failures - 1));
    const jittered = backoff * (0.5 + Math.random() / 2);
    const delay = Math.max(jittered, (retryAfter || 0) * 1000);
    this.#status("reconnecting");
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.#resume(), delay);
  }

  #reconnectNow() {
    clearTimeout(this.timer);
    this.#resume();
  }

  /** Stream on from where we were, or load the snapshot if we never had a position. */
  #resume() {
    if (this.closed) return;
    if (this.lastEventId === null) this.#load();
    else this.#open();
  }
}
