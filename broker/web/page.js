// The chat page: rendering only. Every request goes through /broker.js.

import { BrokerError, listModels, openConversation, startSession } from "/broker.js";

const $ = (selector) => /** @type {HTMLElement} */ (document.querySelector(selector));
const ui = {
  conversations: $("#conversations"),
  title: $("#title"),
  status: $("#status"),
  banner: $("#banner"),
  tokenForm: /** @type {HTMLFormElement} */ ($("#token-form")),
  tokenInput: /** @type {HTMLInputElement} */ ($("#token-input")),
  messages: $("#messages"),
  composer: /** @type {HTMLFormElement} */ ($("#composer")),
  prompt: /** @type {HTMLTextAreaElement} */ ($("#prompt")),
  model: /** @type {HTMLSelectElement} */ ($("#model")),
  params: /** @type {HTMLInputElement} */ ($("#params")),
  send: /** @type {HTMLButtonElement} */ ($("#send")),
  stop: /** @type {HTMLButtonElement} */ ($("#stop")),
};

const STATUS_TEXT = {
  idle: "idle",
  connecting: "connecting…",
  live: "live",
  reconnecting: "reconnecting…",
  waiting: "new conversation",
  unauthorized: "token needed",
  forbidden: "no access",
  failed: "error",
  closed: "closed",
};
const BADGES = {
  queued: "waiting for a worker…",
  running: "streaming…",
  completed: "",
  cancelled: "stopped",
  failed: "failed",
};
const LIST_KEY = "broker.conversations";
const TOKEN_KEY = "broker.token";

/** @type {import("/broker.js").Conversation | null} */
let conversation = null;
/** Assistant bubbles by run id. @type {Map<string, Answer>} */
let answers = new Map();
/** User messages already shown, by message id. */
let shownMessages = new Set();
let token = sessionStorage.getItem(TOKEN_KEY);

// ---- routing: the conversation is in the URL, #/c/<cid> ------------------------------------

function readHash() {
  const hash = location.hash;
  const fromUrl = /(?:^#|[?&])token=([^&]+)/.exec(hash);
  if (fromUrl) {
    token = decodeURIComponent(fromUrl[1]);
    sessionStorage.setItem(TOKEN_KEY, token);
    // Keep the token out of the address bar and the history.
    const clean = hash.replace(/[?&]?token=[^&]+/, "").replace(/^#&/, "#");
    history.replaceState(null, "", clean && clean !== "#" ? clean : location.pathname);
  }
  const match = /^#\/c\/([A-Za-z0-9_-]{1,128})/.exec(location.hash);
  return match ? match[1] : null;
}

function newId() {
  const bytes = crypto.getRandomValues(new Uint8Array(8));
  return "c-" + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

// ---- the conversation list, kept in this browser ----------------------------------------------

function loadList() {
  try {
    return JSON.parse(localStorage.getItem(LIST_KEY) || "[]");
  } catch {
    return [];
  }
}

function remember(cid, title) {
  const list = loadList().filter((item) => item.id !== cid);
  const previous = loadList().find((item) => item.id === cid);
  list.unshift({ id: cid, title: title || previous?.title || cid });
  localStorage.setItem(LIST_KEY, JSON.stringify(list.slice(0, 50)));
  renderList(cid);
}

function renderList(current) {
  ui.conversations.replaceChildren(
    ...loadList().map((item) => {
      const link = document.createElement("a");
      link.href = `#/c/${item.id}`;
      link.textContent = item.title;
      link.title = item.id;
      if (item.id === current) link.setAttribute("aria-current", "page");
      return link;
    }),
  );
}

// ---- rendering --------------------------------------------------------------------------------

function nearBottom() {
  const box = ui.messages;
  return box.scrollHeight - box.scrollTop - box.clientHeight < 80;
}

function follow(wasNear) {
  if (wasNear) ui.messages.scrollTop = ui.messages.scrollHeight;
}

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function addUser(message) {
  if (shownMessages.has(message.message_id)) return;
  shownMessages.add(message.message_id);
  const node = element("article", "msg user", message.content);
  node.dataset.role = "user";
  node.dataset.messageId = message.message_id;
  node.dataset.runId = message.run_id;
  ui.messages.append(node);
  if (shownMessages.size === 1 && conversation) remember(conversation.cid, message.content.slice(0, 48));
}

class Answer {
  constructor(runId) {
    this.node = element("article", "msg assistant");
    this.node.dataset.role = "assistant";
    this.node.dataset.runId = runId;
    this.reasoning = element("details", "reasoning");
    this.reasoning.append(element("summary", "", "reasoning"), (this.reasoningText = element("div", "text")));
    this.reasoning.hidden = true;
    this.content = element("div", "content");
    this.parts = new Map();
    this.failure = element("div", "failure");
    this.failure.hidden = true;
    this.meta = element("div", "meta");
    this.badge = element("span", "badge");
    this.model = element("span", "model");
    this.meta.append(this.badge, this.model);
    this.node.append(this.reasoning, this.content, this.failure, this.meta);
    ui.messages.append(this.node);
    this.setStatus("queued");
  }

  setStatus(status) {
    this.node.dataset.status = status;
    this.badge.textContent = BADGES[status] ?? status;
  }

  add(channel, text) {
    if (channel === "reasoning") {
      this.reasoning.hidden = false;
      this.reasoningText.append(text);
    } else {
      this.content.append(text);
    }
  }

  /** A tool call, tool result or data part, in order among the text; `key` finds it again. */
  part(key, kind, text) {
    let node = this.parts.get(key);
    if (!node) {
      node = element("div", `part ${kind}`);
      node.dataset.part = key;
      this.parts.set(key, node);
      this.content.append(node);
    }
    node.textContent = text;
    return node;
  }

  /** A tool call: its argument text grows piece by piece until the whole value arrives. */
  toolCall(callId, name, { piece, whole }) {
    const key = `call-${callId}`;
    let args = this.parts.get(key)?.dataset.args || "";
    if (whole !== undefined) args = typeof whole === "string" ? whole : JSON.stringify(whole);
    else args += piece || "";
    this.part(key, "tool-call", `tool call: ${name}(${args})`).dataset.args = args;
  }

  toolResult(callId, result, isError) {
    const text = typeof result === "string" ? result : JSON.stringify(result);
    this.part(`result-${callId}`, isError ? "tool-result error" : "tool-result",
      `${isError ? "tool error" : "tool result"}: ${text}`);
  }

  data(name, value) {
    this.part(`data-${this.parts.size}`, "data", `${name}: ${JSON.stringify(value)}`);
  }

  fail(error) {
    this.setStatus("failed");
    this.failure.hidden = false;
    this.failure.textContent = `${error.code}: ${error.message}`;
  }
}

function answerFor(runId) {
  let answer = answers.get(runId);
  if (!answer) {
    answer = new Answer(runId);
    answers.set(runId, answer);
  }
  return answer;
}

/** One part of a snapshot message, rendered as the live events would have. */
function renderPart(answer, part) {
  switch (part.type) {
    case "text":
      answer.add("content", part.text);
      break;
    case "reasoning":
      answer.add("reasoning", part.text);
      break;
    case "tool_call":
      answer.toolCall(part.call_id, part.name, { whole: part.arguments });
      break;
    case "tool_result":
      answer.toolResult(part.call_id, part.result, part.is_error);
      break;
    case "data":
      answer.data(part.name, part.value);
      break;
    default:
      break; // a part this page does not render
  }
}

function renderSnapshot(state) {
  ui.messages.replaceChildren();
  answers = new Map();
  shownMessages = new Set();
  for (const message of state.messages) {
    if (message.role === "user") {
      addUser(message);
      continue;
    }
    const answer = answerFor(message.run_id);
    answer.node.dataset.messageId = message.message_id;
    if (message.parts && message.parts.length) {
      for (const part of message.parts) renderPart(answer, part);
    } else {
      if (message.reasoning) answer.add("reasoning", message.reasoning);
      answer.add("content", message.content);
    }
    answer.setStatus(message.status);
    if (message.error) answer.fail(message.error);
  }
  if (state.active_run_id) {
    const answer = answerFor(state.active_run_id);
    if (answer.node.dataset.status === "completed") answer.setStatus("running");
  }
  if (!state.messages.length) {
    const text = token
      ? "Nothing here yet, or nothing this token may see: send a message to start."
      : "Nothing here yet: send a message to start.";
    ui.messages.append(element("p", "notice", text));
  }
  ui.messages.scrollTop = ui.messages.scrollHeight;
  updateStop();
}

function onEvent(name, data) {
  const wasNear = nearBottom();
  ui.messages.querySelector(".notice")?.remove();
  switch (name) {
    case "message":
      addUser(data);
      answerFor(data.run_id);
      break;
    case "run.started": {
      const answer = answerFor(data.run_id);
      answer.node.dataset.messageId = data.message_id;
      answer.model.textContent = data.model;
      answer.setStatus("running");
      break;
    }
    case "delta":
      answerFor(data.run_id).add(data.channel, data.text);
      break;
    case "run.completed":
      answerFor(data.run_id).setStatus("completed");
      break;
    case "run.cancelled":
      answerFor(data.run_id).setStatus("cancelled");
      break;
    case "run.failed":
      answerFor(data.run_id).fail(data.error);
      break;
    case "tool.call":
      answerFor(data.run_id).toolCall(data.call_id, data.name, {
        piece: data.arguments_delta, whole: data.arguments,
      });
      break;
    case "tool.result":
      answerFor(data.run_id).toolResult(data.call_id, data.result, data.is_error);
      break;
    case "data":
      answerFor(data.run_id).data(data.name, data.value);
      break;
    default:
      return; // an event this page does not render
  }
  follow(wasNear);
  updateStop();
}

function updateStop() {
  ui.stop.disabled = !(conversation && conversation.activeRunId);
}

function showStatus(status, detail) {
  ui.status.dataset.status = status;
  ui.status.textContent = STATUS_TEXT[status] || status;
  if (status === "live") hideBanner();
  ui.tokenForm.hidden = status !== "unauthorized";
  if (status === "forbidden" && detail) showBanner(detail);
}

function describe(error) {
  if (!(error instanceof BrokerError)) return String(error);
  const label = error.status ? `${error.status} ${error.code}` : error.code;
  const hints = {
    unauthorized: "Paste a valid token below.",
    token_expired: "The token expired: paste a new one below.",
    too_many_runs: "Wait for a run to finish.",
    run_active: "An answer is still running: wait, or press Stop.",
    conversation_not_found: "It does not exist, or this token may not see it.",
    network: "The broker does not answer; retrying.",
  };
  const hint = hints[error.code] ? ` ${hints[error.code]}` : "";
  const retry = error.retryAfter ? ` Retrying in ${error.retryAfter} s.` : "";
  return `${label}: ${error.message}.${hint}${retry}`;
}

function showBanner(error) {
  ui.banner.hidden = false;
  ui.banner.dataset.code = error instanceof BrokerError ? error.code : "error";
  ui.banner.textContent = describe(error);
}

function hideBanner() {
  ui.banner.hidden = true;
  ui.banner.textContent = "";
  delete ui.banner.dataset.code;
}

// ---- wiring -----------------------------------------------------------------------------------

function open(cid) {
  conversation?.close();
  conversation = null;
  hideBanner();
  ui.title.textContent = cid;
  document.title = `${cid} · stream broker`;
  remember(cid);
  ui.messages.replaceChildren();
  conversation = openConversation("", cid, {
    onSnapshot: renderSnapshot,
    onEvent,
    onStatus: showStatus,
    onReset: () => {
      ui.messages.replaceChildren(element("p", "notice", "history was trimmed: reloading"));
    },
    onError: showBanner,
  }, { token });
}

function route() {
  const cid = readHash();
  if (!cid) {
    const recent = loadList()[0];
    location.replace(`#/c/${recent ? recent.id : newId()}`);
    return;
  }
  if (conversation && conversation.cid === cid) return;
  open(cid);
}

ui.composer.addEventListener("submit", async (event) => {
  event.preventDefault();
  const content = ui.prompt.value;
  if (!content.trim() || !conversation) return;
  let params = {};
  if (ui.params.value.trim()) {
    try {
      params = JSON.parse(ui.params.value);
    } catch {
      showBanner(new BrokerError(0, "invalid_params", "params must be a JSON object"));
      return;
    }
  }
  ui.send.disabled = true;
  try {
    await conversation.send(content, { model: ui.model.value || undefined, params });
    ui.prompt.value = "";
    hideBanner();
  } catch (error) {
    showBanner(error);
  } finally {
    ui.send.disabled = false;
    ui.prompt.focus();
  }
});

ui.prompt.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    ui.composer.requestSubmit();
  }
});

ui.stop.addEventListener("click", async () => {
  if (!conversation) return;
  ui.stop.disabled = true;
  try {
    await conversation.cancel({ runId: conversation.activeRunId });
  } catch (error) {
    showBanner(error);
    updateStop();
  }
});

$("#new-conversation").addEventListener("click", () => {
  location.hash = `#/c/${newId()}`;
});

$("#open-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const input = /** @type {HTMLInputElement} */ ($("#open-id"));
  if (input.checkValidity() && input.value) location.hash = `#/c/${input.value}`;
  input.value = "";
});

ui.tokenForm.addEventListener("submit", async (event) => {
  event.preventDefault();
  const value = ui.tokenInput.value.trim();
  if (!value || !conversation) return;
  try {
    await conversation.setToken(value);
    token = value;
    sessionStorage.setItem(TOKEN_KEY, value);
    ui.tokenInput.value = "";
    ui.tokenForm.hidden = true;
    hideBanner();
    await loadModels();
  } catch (error) {
    showBanner(error);
  }
});

async function loadModels() {
  try {
    const { default: fallback, models } = await listModels("", { token });
    ui.model.replaceChildren(
      ...models.map(({ name }) => {
        const option = element("option", "", name);
        option.value = name;
        option.selected = name === fallback;
        return option;
      }),
    );
  } catch (error) {
    ui.model.replaceChildren(element("option", "", "simulated"));
    if (error instanceof BrokerError && error.status !== 401) showBanner(error);
  }
}

async function main() {
  readHash();
  if (token) {
    try {
      await startSession("", token);
    } catch (error) {
      showBanner(error);
    }
  }
  await loadModels();
  window.addEventListener("hashchange", route);
  route();
}

main();
