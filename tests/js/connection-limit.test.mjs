// The real clients against a server where the user (CHAT_TOKEN) already holds
// MAX_CONNECTIONS_PER_USER connections (tests/test_abuse_connections.py sets it up): refused at
// connection_init, neither client comes back in a loop.
import { test } from "node:test";
import assert from "node:assert/strict";

import { createClient } from "graphql-ws";
import { SubscriptionClient } from "subscriptions-transport-ws";
import WebSocket from "ws";

const SERVER = process.env.CHAT_SERVER_URL;
const TOKEN = process.env.CHAT_TOKEN;
const ROOM = process.env.CHAT_ROOM;
const LIMIT = process.env.CHAT_LIMIT;
assert.ok(SERVER && TOKEN && ROOM && LIMIT, "set CHAT_SERVER_URL, CHAT_TOKEN, CHAT_ROOM and CHAT_LIMIT");
const WS_URL = `${SERVER.replace(/^http/, "ws")}/graphql`;
const MESSAGE_CREATED = "subscription($room: ID!) { messageCreated(room: $room) { id body } }";

function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

test("graphql-ws reports the 1008 refusal after one attempt, without retrying", async () => {
  let attempts = 0;
  const client = createClient({
    url: WS_URL,
    webSocketImpl: WebSocket,
    connectionParams: { authorization: `Bearer ${TOKEN}` },
    retryAttempts: 5, // the default: a retried close code would reach the sink only after 5 more attempts (> 30 s)
    on: { connecting: () => attempts++ },
  });
  try {
    const error = await withTimeout(
      new Promise((resolve, reject) => {
        client.subscribe(
          { query: MESSAGE_CREATED, variables: { room: ROOM } },
          {
            next: (value) => reject(new Error(`delivered: ${JSON.stringify(value)}`)),
            error: resolve,
            complete: () => reject(new Error("completed without an error")),
          },
        );
      }),
      10_000,
      "the refusal",
    );
    assert.equal(error.code, 1008);
    assert.equal(error.reason, `TOO_MANY_CONNECTIONS: at most ${LIMIT} per user`);
    assert.equal(attempts, 1);
  } finally {
    await client.dispose();
  }
});

test("subscriptions-transport-ws hands the connection_error to its connectionCallback", async () => {
  let client;
  try {
    const error = await withTimeout(
      new Promise((resolve) => {
        client = new SubscriptionClient(
          WS_URL,
          { reconnect: false, connectionParams: { authToken: TOKEN }, connectionCallback: resolve },
          WebSocket,
        );
      }),
      10_000,
      "the connection_error",
    );
    assert.equal(error.extensions.code, "TOO_MANY_CONNECTIONS");
  } finally {
    client?.close();
  }
});
