// An Apollo Client app whose users sign in with the host's JWTs (issue 27): its GraphQLWsLink's
// `connectionParams` is a function that asks the host's token endpoint (TOKEN_URL, a loopback
// server the Python test runs) for a fresh, short-lived token each time the socket connects.
// When the token expires the server closes the socket with 4403; graphql-ws retries that code,
// calls connectionParams again, gets a fresh token and resubscribes, and messages keep arriving
// on the same Apollo subscription.
import { test } from "node:test";
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";

import { ApolloClient, InMemoryCache, gql } from "@apollo/client";
import { GraphQLWsLink } from "@apollo/client/link/subscriptions";
import { createClient } from "graphql-ws";
import WebSocket from "ws";

const SERVER = process.env.CHAT_SERVER_URL;
const TOKEN_URL = process.env.TOKEN_URL;
const TOKEN_TTL = process.env.TOKEN_TTL ?? "5";
assert.ok(SERVER && TOKEN_URL, "set CHAT_SERVER_URL and TOKEN_URL");
const WS_URL = `${SERVER.replace(/^http/, "ws")}/graphql`;

const MESSAGE_CREATED = gql`
  subscription MessageCreated($room: ID!, $after: ID) {
    messageCreated(room: $room, after: $after) { id body seq sender { id name } }
  }
`;

function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** The host's token provider: a fresh JWT for `sub`, living TOKEN_TTL seconds. */
async function fetchToken(sub, ttl = TOKEN_TTL) {
  const response = await fetch(`${TOKEN_URL}/token?sub=${encodeURIComponent(sub)}&ttl=${ttl}&name=Host%20Ann`);
  assert.equal(response.status, 200);
  return (await response.json()).token;
}

/** A GraphQL request over plain HTTP with a bearer token (the host's other calls). */
async function graphql(token, query, variables = {}) {
  const response = await fetch(`${SERVER}/graphql`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${token}` },
    body: JSON.stringify({ query, variables }),
  });
  const body = await response.json();
  assert.equal(body.errors, undefined, JSON.stringify(body.errors));
  return body.data;
}

test("GraphQLWsLink reconnects with a fresh host token when its token expires", async () => {
  const sub = `apollo-${randomUUID()}`;
  const lasting = await fetchToken(sub, "600");
  const { createRoom } = await graphql(lasting, 'mutation { createRoom(name: "apollo host") { id } }');
  const room = createRoom.id;
  const post = (body) =>
    graphql(lasting, "mutation($room: ID!, $body: String!) { createMessage(room: $room, body: $body) { id seq } }", {
      room,
      body,
    });
  const anchor = (await post("anchor")).createMessage;

  const tokens = [];
  const closes = [];
  let connections = 0;
  let onConnected = () => {};
  const wsClient = createClient({
    url: WS_URL,
    webSocketImpl: WebSocket,
    // Called on every connect, first and each reconnect: the token provider.
    connectionParams: async () => {
      const token = await fetchToken(sub);
      tokens.push(token);
      return { authorization: `Bearer ${token}` };
    },
    retryAttempts: 5,
    retryWait: () => new Promise((resolve) => setTimeout(resolve, 200)),
    on: {
      connected: () => { connections += 1; onConnected(); },
      closed: (event) => closes.push(event.code),
    },
  });
  const client = new ApolloClient({ link: new GraphQLWsLink(wsClient), cache: new InMemoryCache() });
  const messages = [];
  const errors = [];
  let wake = () => {};
  const until = (check, what, ms = 20000) =>
    withTimeout(new Promise((resolve) => {
      const poll = () => (check() ? resolve() : (wake = poll));
      poll();
    }), ms, what);
  const connectedTimes = (count) =>
    withTimeout(new Promise((resolve) => {
      const check = () => (connections >= count ? resolve() : (onConnected = check));
      check();
    }), 20000, `${count} connections`);
  // Resuming after the anchor: a resubscription after a reconnect misses nothing posted meanwhile.
  const subscription = client
    .subscribe({ query: MESSAGE_CREATED, variables: { room, after: anchor.id }, fetchPolicy: "no-cache" })
    .subscribe({
      next: (result) => {
        if (result.error) errors.push(result.error);
        if (result.data) messages.push(result.data.messageCreated);
        wake();
      },
      error: (error) => { errors.push(error); wake(); },
    });
  try {
    await connectedTimes(1);
    await post("before expiry");
    await until(() => messages.some((m) => m.body === "before expiry"), "the first message");
    // The token expires: the server closes with 4403, the client fetches a fresh token and is back.
    await connectedTimes(2);
    assert.ok(closes.includes(4403), `closed with ${closes}`);
    assert.ok(tokens.length >= 2 && tokens[0] !== tokens[tokens.length - 1], "a fresh token each connect");
    await post("after reconnecting");
    await until(() => messages.some((m) => m.body === "after reconnecting"), "the message after reconnecting");
    assert.deepEqual(errors, [], "the subscription itself never failed");
    const bodies = [...new Set(messages.map((m) => m.body))];
    assert.deepEqual(bodies, ["before expiry", "after reconnecting"]);
    assert.equal(messages.at(-1).sender.name, "Host Ann");
  } finally {
    subscription.unsubscribe();
    client.stop();
    await wsClient.dispose();
  }
});
