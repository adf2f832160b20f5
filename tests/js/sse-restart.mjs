// graphql-sse's client (distinct connections mode) subscribed to messageCreated while
// tests/test_sse_clients.py posts messages and restarts the server under it. When a stream ends
// without `complete`, graphql-sse reconnects by itself; its headers function then sends the id of
// the last event received as Last-Event-ID, and the server resumes after it.
//
// Env: CHAT_SERVER_URL, CHAT_TOKEN, CHAT_ROOM. Talks to Python in lines:
//   out: `SSE {"type": "CONNECTING"|"CONNECTED"|"RESPONSE"|"FETCH_FAILED"|"MESSAGE"|"COMPLETE"|"ERROR"|"DONE", ...}`
//   in:  `EXPECT <n>`: wait for n messages in all, listen a while longer for extras, print DONE, exit.
import readline from "node:readline";

import { createClient } from "graphql-sse";

const SERVER = process.env.CHAT_SERVER_URL;
const TOKEN = process.env.CHAT_TOKEN;
const ROOM = process.env.CHAT_ROOM;
if (!SERVER || !TOKEN || !ROOM) throw new Error("set CHAT_SERVER_URL, CHAT_TOKEN and CHAT_ROOM");

const MESSAGE_CREATED = `subscription MessageCreated($room: ID!) {
  messageCreated(room: $room) { id seq body }
}`;

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const emit = (type, fields = {}) => process.stdout.write(`SSE ${JSON.stringify({ type, ...fields })}\n`);

let lastEventId = null;
const rawIds = []; // ids of `next` events read from the raw stream, not yet parsed by graphql-sse
const deliveredIds = []; // ids of `next` events parsed by graphql-sse, not yet given to the sink
const received = [];

// graphql-sse's parser drops `id:` lines: read them from the raw bytes, just before graphql-sse
// parses the same bytes.
async function fetchFn(url, init = {}) {
  let response;
  try {
    response = await fetch(url, init);
  } catch (error) {
    emit("FETCH_FAILED", { error: String(error.cause?.code ?? error) });
    throw error;
  }
  emit("RESPONSE", { status: response.status, contentType: response.headers.get("content-type") });
  if (!response.body || !(response.headers.get("content-type") ?? "").startsWith("text/event-stream")) return response;
  const decoder = new TextDecoder();
  let buffer = "";
  const tap = new TransformStream({
    transform(chunk, controller) {
      buffer += decoder.decode(chunk, { stream: true });
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const event = Object.fromEntries(
          block.split("\n").map((line) => /^(id|event):\s?(.*)$/.exec(line)).filter(Boolean).map((m) => [m[1], m[2]]),
        );
        if (event.event === "next") rawIds.push(event.id ?? null);
      }
      controller.enqueue(chunk);
    },
  });
  return new Response(response.body.pipeThrough(tap), {
    status: response.status,
    statusText: response.statusText,
    headers: response.headers,
  });
}

const client = createClient({
  url: `${SERVER}/graphql`,
  singleConnection: false,
  fetchFn,
  // The server is down for a few seconds: retry often, for long enough.
  retryAttempts: 300,
  retry: () => sleep(300),
  headers: () => {
    emit("CONNECTING", { lastEventId });
    return { authorization: `Bearer ${TOKEN}`, ...(lastEventId ? { "last-event-id": lastEventId } : {}) };
  },
  on: {
    connected: (reconnected) => emit("CONNECTED", { reconnected }),
    message: (message) => {
      if (message.event !== "next") return;
      const id = rawIds.shift() ?? null;
      deliveredIds.push(id);
      if (id) lastEventId = id;
    },
  },
});

let failed = false;
client.subscribe(
  { query: MESSAGE_CREATED, variables: { room: ROOM } },
  {
    next: (result) => {
      const eventId = deliveredIds.shift() ?? null;
      if (result.errors || !result.data) {
        failed = true;
        emit("ERROR", { result });
        return;
      }
      const message = result.data.messageCreated;
      received.push(message);
      emit("MESSAGE", { ...message, eventId });
    },
    error: (error) => {
      failed = true;
      emit("ERROR", { error: String(error) });
    },
    complete: () => emit("COMPLETE"),
  },
);

const input = readline.createInterface({ input: process.stdin });
input.on("line", async (line) => {
  const match = /^EXPECT (\d+)$/.exec(line.trim());
  if (!match) return;
  const expected = Number(match[1]);
  const deadline = Date.now() + 60000;
  while (received.length < expected && !failed && Date.now() < deadline) await sleep(50);
  await sleep(1500); // anything delivered twice would arrive now
  emit("DONE", { received: received.length, expected });
  client.dispose();
  input.close();
  process.exit(!failed && received.length === expected ? 0 : 1);
});
