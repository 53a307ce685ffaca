// One scenario of an AI SDK chat against a running broker, driven headlessly in Node.
//
// The client side is the SDK's own: AbstractChat with DefaultChatTransport, the code path
// useChat runs in a browser. Only the chat's state holder is written here (React keeps it in
// hooks). The transport records the type of every chunk it parsed, so a test can see the wire
// as the SDK read it. The result is one JSON line on stdout.
//
//   node scenario.mjs --sdk ai|ai5|ai6 --base http://127.0.0.1:PORT --chat ID --scenario NAME
//        [--token JWT] [--cookie JWT] [--text PROMPT] [--model NAME] [--params JSON]

import { parseArgs } from 'node:util';

const { values: args } = parseArgs({
  options: {
    sdk: { type: 'string', default: 'ai' },
    base: { type: 'string' },
    chat: { type: 'string' },
    scenario: { type: 'string' },
    token: { type: 'string' },
    cookie: { type: 'string' },
    text: { type: 'string', default: 'Tell me about streams' },
    model: { type: 'string' },
    params: { type: 'string', default: '{}' },
    words: { type: 'string', default: '5' },
  },
});

const { AbstractChat, DefaultChatTransport } = await import(args.sdk);
const api = `${args.base}/v1/ai-sdk/chat`;
const body = { params: JSON.parse(args.params), ...(args.model ? { model: args.model } : {}) };
const bearer = args.token ? { Authorization: `Bearer ${args.token}` } : {};
// A page holding the session cookie sends it on its GET requests; posting needs the header.
const reader = args.cookie ? { Cookie: `broker_token=${args.cookie}` } : bearer;

class State {
  constructor(messages = []) {
    this.messages = messages;
    this.status = 'ready';
    this.error = undefined;
  }
  pushMessage(message) {
    this.messages = this.messages.concat(structuredClone(message));
  }
  popMessage() {
    this.messages = this.messages.slice(0, -1);
  }
  replaceMessage(index, message) {
    this.messages = [
      ...this.messages.slice(0, index),
      structuredClone(message),
      ...this.messages.slice(index + 1),
    ];
  }
  snapshot(thing) {
    return structuredClone(thing);
  }
}

class Chat extends AbstractChat {
  constructor({ messages, ...init }) {
    super({ ...init, state: new State(messages) });
  }
}

class RecordingTransport extends DefaultChatTransport {
  constructor(options) {
    super(options);
    this.chunks = [];
  }
  processResponseStream(stream) {
    const chunks = this.chunks;
    return super.processResponseStream(stream).pipeThrough(
      new TransformStream({
        transform(chunk, controller) {
          chunks.push(chunk.type);
          controller.enqueue(chunk);
        },
      }),
    );
  }
}

function client({ headers = bearer, messages = [] } = {}) {
  const transport = new RecordingTransport({ api, headers, body });
  const chat = new Chat({ id: args.chat, transport, messages });
  return { chat, transport };
}

const assistant = chat => chat.messages.findLast(m => m.role === 'assistant');
const textOf = message =>
  (message?.parts ?? [])
    .filter(p => p.type === 'text')
    .map(p => p.text)
    .join('');
const words = text => text.split(/\s+/).filter(Boolean).length;

async function until(predicate, what, timeoutMs = 20000) {
  const deadline = Date.now() + timeoutMs;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise(resolve => setTimeout(resolve, 5));
  }
}

async function storedMessages() {
  const response = await fetch(`${api}/${args.chat}/messages`, { headers: reader });
  return { status: response.status, messages: await response.json() };
}

const view = ({ chat, transport }) => ({
  status: chat.status,
  error: chat.error ? chat.error.message : null,
  messages: chat.messages,
  chunks: transport.chunks,
});

async function answering(minWords) {
  const a = client();
  const sending = a.chat.sendMessage({ text: args.text });
  await until(() => words(textOf(assistant(a.chat))) >= minWords, 'the answer to begin');
  return { a, sending };
}

const scenarios = {
  // useChat({ resume: true }) mounting on a chat with nothing to resume.
  async 'resume-unknown'() {
    const a = client({ headers: reader });
    await a.chat.resumeStream();
    return view(a);
  },

  async send() {
    const a = client();
    await a.chat.sendMessage({ text: args.text });
    return view(a);
  },

  // stop() aborts the fetch only; resumeStream() in the same client rebuilds the message.
  async 'abort-resume'() {
    const { a, sending } = await answering(Number(args.words));
    const first = structuredClone(assistant(a.chat));
    await a.chat.stop();
    await sending;
    const stopped = a.chat.status;
    const chunksBefore = a.transport.chunks.length;
    await a.chat.resumeStream();
    return { ...view(a), first, stopped, resumedChunks: a.transport.chunks.slice(chunksBefore) };
  },

  // A page reload: a new client renders GET /messages, then resumes (with the cookie, when given).
  async 'reload-resume'() {
    const { a, sending } = await answering(Number(args.words));
    const first = structuredClone(assistant(a.chat));
    await a.chat.stop();
    await sending;
    const loaded = await storedMessages();
    const b = client({ headers: reader, messages: loaded.messages });
    await b.chat.resumeStream();
    return { ...view(b), first, loaded };
  },

  // A second device resumes while the first is still reading.
  async 'second-reader'() {
    const { a, sending } = await answering(3);
    const loaded = await storedMessages();
    const b = client({ headers: reader, messages: loaded.messages });
    await b.chat.resumeStream();
    await sending;
    return { a: view(a), b: view(b) };
  },

  // The run has ended: nothing to resume, and GET /messages has the whole message.
  async 'after-finish'() {
    const a = client();
    await a.chat.sendMessage({ text: args.text });
    const loaded = await storedMessages();
    const b = client({ headers: reader, messages: loaded.messages });
    await b.chat.resumeStream();
    return { a: view(a), b: view(b), loaded };
  },

  // The stop endpoint, from another client; the first one's stream ends with abort.
  async 'stop-from-other'() {
    const { a, sending } = await answering(3);
    const stop = await fetch(`${api}/${args.chat}/stop`, { method: 'POST', headers: bearer });
    await sending;
    return { ...view(a), stop: { status: stop.status, body: await stop.json() } };
  },

  // A second message while the first is being answered: the SDK surfaces the 409.
  async conflict() {
    const { a, sending } = await answering(2);
    const b = client();
    await b.chat.sendMessage({ text: 'me too' });
    await fetch(`${api}/${args.chat}/stop`, { method: 'POST', headers: bearer });
    await sending;
    return { a: view(a), b: view(b) };
  },

  async regenerate() {
    const a = client();
    await a.chat.sendMessage({ text: args.text });
    const firstAnswer = structuredClone(assistant(a.chat));
    await a.chat.regenerate();
    return { ...view(a), firstAnswer, loaded: await storedMessages() };
  },
};

const run = scenarios[args.scenario];
if (!run) throw new Error(`unknown scenario ${args.scenario}`);
const result = await run();
process.stdout.write(JSON.stringify(result) + '\n');
