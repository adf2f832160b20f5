// Real Apollo Client apps against the running server (CHAT_SERVER_URL): queries and mutations
// over HttpLink, subscriptions over GraphQLWsLink (graphql-ws) or the legacy WebSocketLink
// (subscriptions-transport-ws), joined with a split link as Apollo's docs set them up.
import { test } from "node:test";
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";

import { ApolloClient, ApolloLink, HttpLink, InMemoryCache, gql } from "@apollo/client";
import { GraphQLWsLink } from "@apollo/client/link/subscriptions";
import { WebSocketLink } from "@apollo/client/link/ws";
import { getMainDefinition } from "@apollo/client/utilities";
import { createClient } from "graphql-ws";
import { SubscriptionClient } from "subscriptions-transport-ws";
import WebSocket from "ws";

// Browsers have a global WebSocket, and Apollo's GraphQLWsLink looks for it; Node 20 has none.
globalThis.WebSocket ??= WebSocket;

const SERVER = process.env.CHAT_SERVER_URL;
assert.ok(SERVER, "set CHAT_SERVER_URL to the server under test");
const WS_URL = `${SERVER.replace(/^http/, "ws")}/graphql`;

const SIGN_UP = gql`
  mutation SignUp($name: String!, $email: String!, $password: String!) {
    signUp(name: $name, email: $email, password: $password) { token user { id name } }
  }
`;
const CREATE_ROOM = gql`mutation CreateRoom($name: String!) { createRoom(name: $name, kind: PUBLIC) { id name } }`;
const JOIN_ROOM = gql`mutation JoinRoom($room: ID!) { joinRoom(room: $room) { id } }`;
const CREATE_MESSAGE = gql`
  mutation CreateMessage($room: ID!, $body: String!) { createMessage(room: $room, body: $body) { id seq body } }
`;
const MESSAGE_CREATED = gql`
  subscription MessageCreated($room: ID!, $after: ID) {
    messageCreated(room: $room, after: $after) {
      id body seq createdAt sender { id name avatar(size: 32) } room { id name }
    }
  }
`;

function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

function makeClient(token, transport) {
  const http = new HttpLink({ uri: `${SERVER}/graphql`, headers: token ? { authorization: `Bearer ${token}` } : {} });
  if (!token) return { client: new ApolloClient({ link: http, cache: new InMemoryCache() }), dispose: () => {} };
  let wsLink;
  let dispose;
  if (transport === "graphql-ws") {
    const wsClient = createClient({ url: WS_URL, webSocketImpl: WebSocket, connectionParams: { authorization: `Bearer ${token}` } });
    wsLink = new GraphQLWsLink(wsClient);
    dispose = () => wsClient.dispose();
  } else {
    const subscriptionClient = new SubscriptionClient(WS_URL, { reconnect: true, connectionParams: { authToken: token } }, WebSocket);
    wsLink = new WebSocketLink(subscriptionClient);
    dispose = () => subscriptionClient.close(true);
  }
  const link = ApolloLink.split(
    ({ query }) => {
      const definition = getMainDefinition(query);
      return definition.kind === "OperationDefinition" && definition.operation === "subscription";
    },
    wsLink,
    http,
  );
  const client = new ApolloClient({ link, cache: new InMemoryCache() });
  return { client, dispose: () => { client.stop(); dispose(); } };
}

async function signUp(name) {
  const { client } = makeClient(null);
  const email = `${name.toLowerCase()}-${randomUUID()}@example.com`;
  const { data } = await client.mutate({ mutation: SIGN_UP, variables: { name, email, password: "correct horse battery" } });
  return data.signUp;
}

/** Subscribe and collect results; `waitFor(n)` resolves once n messages have arrived. */
function collect(client, variables) {
  const messages = [];
  const errors = [];
  let wake = () => {};
  const subscription = client.subscribe({ query: MESSAGE_CREATED, variables, fetchPolicy: "no-cache" }).subscribe({
    next: (result) => {
      if (result.error) errors.push(result.error);
      if (result.data) messages.push(result.data.messageCreated);
      wake();
    },
    error: (error) => { errors.push(error); wake(); },
  });
  const until = (check, what) =>
    withTimeout(new Promise((resolve) => {
      const poll = () => (check() ? resolve() : (wake = poll));
      poll();
    }), 10000, what);
  return {
    messages,
    errors,
    waitFor: (count) => until(() => messages.length >= count, `${count} messages`),
    waitForError: () => until(() => errors.length > 0, "an error"),
    stop: () => subscription.unsubscribe(),
  };
}

function codesOf(error) {
  const list = error.errors ?? error.graphQLErrors ?? (Array.isArray(error) ? error : [error]);
  return list.map((e) => e.extensions?.code);
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

for (const transport of ["graphql-ws", "subscriptions-transport-ws"]) {
  test(`Apollo Client with ${transport}: sign up, post and receive live, resume, refuse`, async () => {
    const ann = await signUp("Ann");
    const bob = await signUp("Bob");
    const eve = await signUp("Eve");
    const a = makeClient(ann.token, transport);
    const b = makeClient(bob.token, transport);
    const e = makeClient(eve.token, transport);
    try {
      const { data: created } = await a.client.mutate({ mutation: CREATE_ROOM, variables: { name: `room ${transport}` } });
      const room = created.createRoom.id;
      await b.client.mutate({ mutation: JOIN_ROOM, variables: { room } });

      const live = collect(b.client, { room });
      await sleep(700); // let the socket connect and the subscription start
      const posted = [];
      for (let i = 0; i < 6; i++) {
        const poster = i % 2 === 0 ? a : b;
        const { data } = await poster.client.mutate({ mutation: CREATE_MESSAGE, variables: { room, body: `hello ${i}` } });
        posted.push(data.createMessage);
      }
      await live.waitFor(6);
      assert.deepEqual(live.messages.map((m) => m.seq), [1, 2, 3, 4, 5, 6]);
      assert.deepEqual(live.messages.map((m) => m.body), posted.map((m) => m.body));
      assert.deepEqual(live.messages.map((m) => m.sender.name), ["Ann", "Bob", "Ann", "Bob", "Ann", "Bob"]);
      assert.match(live.messages[0].sender.avatar, /^\/avatars\/\d+\.svg\?s=32$/); // drawn from the id (issue 24)
      assert.equal(live.messages[0].room.id, room);
      await sleep(300);
      assert.equal(live.messages.length, 6, "each message arrives once");
      live.stop();

      const resumed = collect(a.client, { room, after: posted[1].id });
      await resumed.waitFor(4);
      assert.deepEqual(resumed.messages.map((m) => m.seq), [3, 4, 5, 6]);
      await a.client.mutate({ mutation: CREATE_MESSAGE, variables: { room, body: "after resuming" } });
      await resumed.waitFor(5);
      assert.equal(resumed.messages[4].body, "after resuming");
      assert.equal(resumed.messages[4].seq, 7);
      resumed.stop();

      const refused = collect(e.client, { room });
      await refused.waitForError();
      assert.deepEqual(codesOf(refused.errors[0]), ["FORBIDDEN"]);
      assert.equal(refused.messages.length, 0);
      refused.stop();
    } finally {
      a.dispose();
      b.dispose();
      e.dispose();
    }
  });
}
