// An AI SDK chat against the broker, without React or Next.js: the same Chat and transport
// useChat uses, with the five settings an app changes. Install and run:
//
//   cd examples/ai_sdk && npm install
//   node chat.mjs my-chat "Tell me about streams"   # ask; Ctrl-C stops the answer on the broker
//   node chat.mjs my-chat                           # later, or on another device: resume or show
//
// BROKER_URL (default http://127.0.0.1:8000) and, with BROKER_AUTH=jwt, BROKER_TOKEN.

import { AbstractChat, DefaultChatTransport } from 'ai';

const broker = process.env.BROKER_URL ?? 'http://127.0.0.1:8000';
const token = process.env.BROKER_TOKEN;
const [chatId = 'demo', question] = process.argv.slice(2);

// The five settings: the chat id is the conversation id, `api` points at the broker, the token
// goes in `headers`, the history comes from /messages, and `resume` is resumeStream() on start.
const api = `${broker}/v1/ai-sdk/chat`;
const headers = token ? { Authorization: `Bearer ${token}` } : {};
const messages = await (await fetch(`${api}/${chatId}/messages`, { headers })).json();
const transport = new DefaultChatTransport({ api, headers });

// What useChat keeps in React state; here it prints the answer as it grows.
class PrintingState {
  constructor(messages) {
    this.messages = messages;
    this.status = 'ready';
    this.error = undefined;
    this.printed = new Map();
  }
  show(message) {
    if (message.role !== 'assistant') return;
    const text = message.parts.filter(p => p.type === 'text').map(p => p.text).join('');
    const done = this.printed.get(message.id) ?? 0;
    process.stdout.write(text.slice(done));
    this.printed.set(message.id, text.length);
  }
  pushMessage(message) {
    this.messages = [...this.messages, structuredClone(message)];
    this.show(message);
  }
  popMessage() {
    this.messages = this.messages.slice(0, -1);
  }
  replaceMessage(index, message) {
    this.messages = this.messages.map((m, i) => (i === index ? structuredClone(message) : m));
    // A resume rebuilds the message from its start: only the text past what is shown prints.
    this.show(message);
  }
  snapshot(thing) {
    return structuredClone(thing);
  }
}

class Chat extends AbstractChat {}

const state = new PrintingState(messages);
const chat = new Chat({ id: chatId, transport, state });

// stop() only drops this connection; the stop endpoint is what cancels the run, from anywhere.
process.once('SIGINT', async () => {
  await fetch(`${api}/${chatId}/stop`, { method: 'POST', headers });
});

for (const message of messages) {
  const text = message.parts.filter(p => p.type === 'text').map(p => p.text).join('');
  console.log(`${message.role}: ${text}`);
  state.printed.set(message.id, text.length);
}
await chat.resumeStream(); // an answer still being generated continues here
if (question) {
  console.log(`user: ${question}`);
  process.stdout.write('assistant: ');
  await chat.sendMessage({ text: question });
}
console.log(chat.error ? `\n[error] ${chat.error.message}` : '');
