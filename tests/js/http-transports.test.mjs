// Real clients of the HTTP transports against the running server (CHAT_SERVER_URL), all at /graphql:
// Apollo Client's HttpLink with multipart subscriptions (no WebSocket), Apollo's persisted-queries
// link (automatic persisted queries, over POST and over GET), the graphql-sse client in distinct
// connections mode (resuming with Last-Event-ID), and graphql-http's GraphQL-over-HTTP audit.
import { test } from "node:test";
import assert from "node:assert/strict";
import { createHash, randomUUID } from "node:crypto";

import { ApolloClient, ApolloLink, HttpLink, InMemoryCache, gql } from "@apollo/client";
import { createPersistedQueryLink } from "@apollo/client/link/persisted-queries";
import { serverAudits } from "graphql-http";
import { createClient } from "graphql-sse";

const SERVER = process.env.CHAT_SERVER_URL;
assert.ok(SERVER, "set CHAT_SERVER_URL to the server under test");
const URL_ = `${SERVER}/graphql`;
const RUN = randomUUID().replace(/-/g, "").slice(0, 12); // fresh query texts (so fresh hashes) every run

// graphql-http audits the server may decline, by id, each with the lead's reason. Any other
// failing MUST or SHOULD fails the test (MAYs are only printed).
const DECLINED_AUDITS = new Map([]);

const SIGN_UP = `mutation SignUp($name: String!, $email: String!, $password: String!) {
  signUp(name: $name, email: $email, password: $password) { token user { id name } }
}`;
const CREATE_ROOM = "mutation CreateRoom($name: String!) { createRoom(name: $name, kind: PUBLIC) { id name } }";
const JOIN_ROOM = "mutation JoinRoom($room: ID!) { joinRoom(room: $room) { id } }";
const CREATE_MESSAGE = "mutation CreateMessage($room: ID!, $body: String!) { createMessage(room: $room, body: $body) { id seq body } }";
const MESSAGE_CREATED_TEXT = `subscription MessageCreated($room: ID!, $after: ID) {
  messageCreated(room: $room, after: $after) { id seq body sender { name } room { id } }
}`;
const ROOM_EVENTS_TEXT = `subscription RoomEvents($room: ID!, $after: String) {
  roomEvents(room: $room, after: $after) { __typename cursor ... on MessageCreated { message { id seq body } } }
}`;

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Polls `check` until it holds; fails with `what` after `ms`. */
async function eventually(check, what, ms = 20000) {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(25);
  }
}

/** A plain GraphQL-over-HTTP POST for the setup steps; the data of a request that must succeed. */
async function graphql(query, variables = {}, token = null) {
  const response = await fetch(URL_, {
    method: "POST",
    headers: { "content-type": "application/json", ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body: JSON.stringify({ query, variables }),
  });
  const body = await response.json();
  assert.equal(body.errors, undefined, `${query}: ${JSON.stringify(body)}`);
  return body.data;
}

async function signUp(name) {
  const email = `${name.toLowerCase()}-${randomUUID()}@example.com`;
  const { signUp } = await graphql(SIGN_UP, { name, email, password: "correct horse battery" });
  return { ...signUp.user, token: signUp.token };
}

async function roomOf(owner, members, name) {
  const { createRoom } = await graphql(CREATE_ROOM, { name }, owner.token);
  for (const member of members) await graphql(JOIN_ROOM, { room: createRoom.id }, member.token);
  return createRoom.id;
}

const post = async (who, room, body) => (await graphql(CREATE_MESSAGE, { room, body }, who.token)).createMessage;

function codesOf(error) {
  const list = error.errors ?? error.graphQLErrors ?? (Array.isArray(error) ? error : [error]);
  return list.map((e) => e.extensions?.code);
}

const STREAMED = /^(multipart\/mixed|text\/event-stream)/i;

/** A fetch that records what was really sent and received: method, URL, headers, the JSON body,
 * and for a JSON answer its status and body; a streamed answer is passed on to the client as it
 * comes, its text kept in `raw`. */
function recordingFetch() {
  const requests = [];
  const fetchFn = async (url, init = {}) => {
    const record = {
      method: (init.method ?? "GET").toUpperCase(),
      url: String(url),
      headers: Object.fromEntries(new Headers(init.headers ?? {}).entries()),
      body: typeof init.body === "string" ? JSON.parse(init.body) : undefined,
      signal: init.signal,
    };
    requests.push(record);
    const response = await fetch(url, init);
    record.status = response.status;
    record.contentType = response.headers.get("content-type");
    record.responseHeaders = response.headers;
    if (!STREAMED.test(record.contentType ?? "")) {
      record.json = await response.clone().json().catch(() => undefined);
      return response;
    }
    record.raw = "";
    const decoder = new TextDecoder();
    const tap = new TransformStream({
      transform(chunk, controller) {
        record.raw += decoder.decode(chunk, { stream: true });
        controller.enqueue(chunk);
      },
    });
    return new Response(response.body.pipeThrough(tap), {
      status: response.status,
      statusText: response.statusText,
      headers: response.headers,
    });
  };
  return { fetch: fetchFn, requests };
}

// ---------------------------------------------------------------------------------------------
// 1. Apollo Client's HttpLink alone: subscriptions as multipart HTTP responses.

const MESSAGE_CREATED = gql(MESSAGE_CREATED_TEXT);
const ME = gql`query Me { me { id name } }`;

function apolloCollect(client, variables) {
  const messages = [];
  const errors = [];
  let ended = false;
  const subscription = client.subscribe({ query: MESSAGE_CREATED, variables, fetchPolicy: "no-cache" }).subscribe({
    next: (result) => {
      if (result.error) errors.push(result.error);
      if (result.data) messages.push(result.data.messageCreated);
    },
    error: (error) => { errors.push(error); ended = true; },
    complete: () => { ended = true; },
  });
  return { messages, errors, get ended() { return ended; }, stop: () => subscription.unsubscribe() };
}

test("Apollo HttpLink: a subscription over multipart HTTP receives posts in order, unsubscribes, refuses", async (t) => {
  const ann = await signUp("Ann");
  const bob = await signUp("Bob");
  const eve = await signUp("Eve");
  const room = await roomOf(ann, [bob], "multipart");
  const recorder = recordingFetch();
  const link = new HttpLink({ uri: URL_, headers: { authorization: `Bearer ${bob.token}` }, fetch: recorder.fetch });
  const client = new ApolloClient({ link, cache: new InMemoryCache() });
  t.after(() => client.stop());
  const { data } = await client.query({ query: ME, fetchPolicy: "no-cache" });
  assert.equal(data.me.name, "Bob");

  const live = apolloCollect(client, { room });
  t.after(() => live.stop());
  await eventually(() => recorder.requests.length === 2 && recorder.requests[1].status !== undefined, "the multipart response");
  const request = recorder.requests[1];
  assert.equal(request.method, "POST");
  assert.match(request.headers.accept, /^multipart\/mixed;\s*boundary="?graphql"?;\s*subscriptionSpec="?1\.0"?/);
  assert.equal(request.body.query.includes("messageCreated"), true);
  assert.equal(request.status, 200);
  assert.match(request.contentType, /^multipart\/mixed;\s*boundary="?graphql"?;\s*subscriptionSpec="?1\.0"?$/i);
  await sleep(1000); // the response has begun; give the subscription a moment to be live

  const posted = [];
  for (let i = 0; i < 6; i++) posted.push(await post(i % 2 === 0 ? ann : bob, room, `multipart ${i}`));
  await eventually(() => live.messages.length >= 6 || live.errors.length > 0, "6 messages over multipart");
  assert.deepEqual(live.errors, []);
  assert.deepEqual(live.messages.map((m) => m.seq), [1, 2, 3, 4, 5, 6]);
  assert.deepEqual(live.messages.map((m) => m.id), posted.map((m) => m.id));
  assert.deepEqual(live.messages.map((m) => m.body), posted.map((m) => m.body));
  assert.deepEqual(live.messages.map((m) => m.sender.name), ["Ann", "Bob", "Ann", "Bob", "Ann", "Bob"]);
  assert.equal(live.messages[0].room.id, room);
  await sleep(500);
  assert.equal(live.messages.length, 6, "each message arrives once");
  const quiet = request.raw; // what had arrived once the six were in and all was quiet

  live.stop();
  await eventually(() => request.signal.aborted, "unsubscribing to abort the multipart request");
  await post(ann, room, "after unsubscribing");
  await sleep(500);
  assert.equal(live.messages.length, 6, "nothing after unsubscribing");
  assert.deepEqual(live.errors, []);
  assert.equal(recorder.requests.filter((r) => r.headers.accept?.startsWith("multipart/mixed")).length, 1, "no WebSocket, no retry");

  const eves = new ApolloClient({
    link: new HttpLink({ uri: URL_, headers: { authorization: `Bearer ${eve.token}` } }),
    cache: new InMemoryCache(),
  });
  const refused = apolloCollect(eves, { room });
  t.after(() => { refused.stop(); eves.stop(); });
  await eventually(() => refused.errors.length > 0, "Eve's refusal");
  assert.deepEqual(codesOf(refused.errors[0]), ["FORBIDDEN"]);
  assert.equal(refused.messages.length, 0);
  await eventually(() => refused.ended, "the refused subscription to end");

  // Apollo Client hands a part over only once the delimiter after it has arrived: a server that
  // writes the delimiter before each part instead of after it has every result wait for the next
  // part (a heartbeat, seconds later). Apollo's router ends each chunk with the next delimiter.
  assert.match(
    quiet.slice(-120),
    /\r\n--graphql(--)?(\r\n)?$/,
    "the stream so far ends with a delimiter, so its last result is complete for the client",
  );
});

// ---------------------------------------------------------------------------------------------
// 2. Automatic persisted queries through Apollo's persisted-queries link.

const sha256 = (text) => createHash("sha256").update(text).digest("hex");

function apqClient(token, options = {}) {
  const recorder = recordingFetch();
  const link = ApolloLink.from([
    createPersistedQueryLink({ sha256, ...options }),
    new HttpLink({ uri: URL_, headers: { authorization: `Bearer ${token}` }, fetch: recorder.fetch }),
  ]);
  return { client: new ApolloClient({ link, cache: new InMemoryCache() }), requests: recorder.requests };
}

/** The parameters of a request as the server reads them: the JSON body of a POST, the query string of a GET. */
function paramsOf(request) {
  if (request.method === "POST") return request.body;
  const search = new URL(request.url).searchParams;
  const params = Object.fromEntries(search.entries());
  for (const key of ["variables", "extensions"]) if (key in params) params[key] = JSON.parse(params[key]);
  return params;
}

function assertNotFoundThenRegistered(requests, method) {
  assert.equal(requests.length, 2, JSON.stringify(requests.map((r) => [r.method, r.url, r.body])));
  const [hashOnly, full] = requests;
  assert.equal(hashOnly.method, method);
  const first = paramsOf(hashOnly);
  assert.equal(first.query, undefined, "the first request sends only the hash");
  const hash = first.extensions.persistedQuery.sha256Hash;
  assert.deepEqual(first.extensions.persistedQuery, { version: 1, sha256Hash: hash });
  assert.equal(hashOnly.status, 200);
  assert.deepEqual(hashOnly.json.errors.map((e) => e.extensions?.code), ["PERSISTED_QUERY_NOT_FOUND"]);
  assert.equal(hashOnly.json.errors[0].message, "PersistedQueryNotFound");
  assert.equal(full.method, "POST", "the link sends the full text in a POST");
  assert.equal(typeof full.body.query, "string");
  assert.deepEqual(full.body.extensions.persistedQuery, { version: 1, sha256Hash: hash });
  assert.equal(sha256(full.body.query), hash);
  assert.equal(full.status, 200);
  assert.equal(full.json.errors, undefined, JSON.stringify(full.json));
  return hash;
}

function assertHashOnlySucceeded(requests, method, hash) {
  assert.equal(requests.length, 1, JSON.stringify(requests.map((r) => [r.method, r.url, r.body])));
  const [only] = requests;
  assert.equal(only.method, method);
  const params = paramsOf(only);
  assert.equal(params.query, undefined, "only the hash is sent");
  assert.equal(params.extensions.persistedQuery.sha256Hash, hash);
  if (method === "GET") assert.equal(new URL(only.url).searchParams.has("query"), false);
  assert.equal(only.status, 200);
  assert.equal(only.json.errors, undefined, JSON.stringify(only.json));
  return only.json.data;
}

test("APQ over POST: unknown hash, registered with its text, then a new client sends only the hash", async () => {
  const ann = await signUp("Ann");
  const query = gql(`query ApqPost_${RUN}($size: Int) { me { id name avatar(size: $size) } }`);

  const first = apqClient(ann.token);
  const { data } = await first.client.query({ query, variables: { size: 40 }, fetchPolicy: "no-cache" });
  assert.equal(data.me.name, "Ann");
  const hash = assertNotFoundThenRegistered(first.requests, "POST");

  const second = apqClient(ann.token);
  const again = await second.client.query({ query, variables: { size: 41 }, fetchPolicy: "no-cache" });
  assert.equal(again.data.me.name, "Ann");
  assert.match(again.data.me.avatar, /\?s=41$/);
  const sent = assertHashOnlySucceeded(second.requests, "POST", hash);
  assert.equal(sent.me.id, ann.id);
  first.client.stop();
  second.client.stop();
});

test("APQ over GET (useGETForHashedQueries): hash-only GETs, the full text by POST once; mutations stay POST", async () => {
  const ann = await signUp("Ann");
  const room = await roomOf(ann, [], "persisted");
  const query = gql(`query ApqGet_${RUN}($room: ID!) { room(id: $room) { id name members { name } } }`);

  const first = apqClient(ann.token, { useGETForHashedQueries: true });
  const { data } = await first.client.query({ query, variables: { room }, fetchPolicy: "no-cache" });
  assert.equal(data.room.id, room);
  assert.equal(data.room.name, "persisted");
  assert.deepEqual(data.room.members.map((m) => m.name), ["Ann"]);
  const hash = assertNotFoundThenRegistered(first.requests, "GET");
  assert.deepEqual(paramsOf(first.requests[0]).variables, { room });

  const second = apqClient(ann.token, { useGETForHashedQueries: true });
  const again = await second.client.query({ query, variables: { room }, fetchPolicy: "no-cache" });
  assert.equal(again.data.room.name, "persisted");
  assertHashOnlySucceeded(second.requests, "GET", hash);

  // A mutation is never sent by GET: hash-only POST, unknown, so not run; then its text, run once.
  const mutation = gql(`mutation ApqMutation_${RUN}($room: ID!, $body: String!) { createMessage(room: $room, body: $body) { id seq } }`);
  const third = apqClient(ann.token, { useGETForHashedQueries: true });
  const created = await third.client.mutate({ mutation, variables: { room, body: "persisted once" } });
  assert.equal(created.data.createMessage.seq, 1);
  assertNotFoundThenRegistered(third.requests, "POST");
  const history = await graphql("query($room: ID!) { room(id: $room) { messages { edges { node { body } } } } }", { room }, ann.token);
  assert.deepEqual(history.room.messages.edges.map((e) => e.node.body), ["persisted once"]);
  for (const { client } of [first, second, third]) client.stop();
});

// ---------------------------------------------------------------------------------------------
// 3. graphql-sse's client, distinct connections mode.

/** graphql-sse's client for `token`. Its parser drops the events' `id:` lines, so its fetch is
 * tapped: each `next` event's id is read from the raw stream just before graphql-sse parses the
 * same bytes, and `on.message` (called once per parsed event, in order) takes it as the last
 * event id, which the headers function sends back as Last-Event-ID on the next connection. */
function sseClient(token) {
  const state = { lastEventId: null, pendingIds: [], responses: [] };
  async function fetchFn(url, init = {}) {
    const response = await fetch(url, init);
    const record = {
      method: init.method,
      headers: Object.fromEntries(new Headers(init.headers ?? {}).entries()),
      status: response.status,
      responseHeaders: response.headers,
      signal: init.signal,
      raw: "",
      events: [],
    };
    state.responses.push(record);
    if (!response.body || !(response.headers.get("content-type") ?? "").startsWith("text/event-stream")) return response;
    const decoder = new TextDecoder();
    let buffer = "";
    const tap = new TransformStream({
      transform(chunk, controller) {
        const text = decoder.decode(chunk, { stream: true });
        record.raw += text;
        buffer += text;
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          const event = { id: null, event: null, data: null, comment: false };
          for (const line of block.split("\n")) {
            if (line.startsWith(":")) event.comment = true;
            const match = /^(id|event|data):\s?(.*)$/.exec(line);
            if (match) event[match[1]] = match[2];
          }
          record.events.push(event);
          if (event.event === "next") state.pendingIds.push(event.id);
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
    url: URL_,
    singleConnection: false,
    retryAttempts: 0, // here any dropped stream is a failure
    fetchFn,
    headers: () => ({
      authorization: `Bearer ${token}`,
      ...(state.lastEventId ? { "last-event-id": state.lastEventId } : {}),
    }),
    on: {
      message: (message) => {
        if (message.event === "next") {
          const id = state.pendingIds.shift();
          if (id) state.lastEventId = id;
        }
      },
    },
  });
  return { client, state };
}

function sseCollect(client, query, variables) {
  const results = [];
  const errors = [];
  let completed = false;
  let connected = false;
  const dispose = client.subscribe(
    { query, variables },
    {
      next: (result) => results.push(result),
      error: (error) => errors.push(error),
      complete: () => { completed = true; },
    },
    { connected: () => { connected = true; } },
  );
  return {
    results,
    errors,
    get completed() { return completed; },
    get connected() { return connected; },
    data: (field) => results.filter((r) => r.data).map((r) => r.data[field]),
    dispose,
  };
}

function assertEventStream(record) {
  assert.equal(record.status, 200);
  assert.equal(record.responseHeaders.get("content-type"), "text/event-stream; charset=utf-8");
  assert.equal(record.responseHeaders.get("cache-control"), "no-cache");
  assert.equal(record.responseHeaders.get("x-accel-buffering"), "no");
  assert.ok(record.raw.startsWith(":\n\n"), `the stream opens with a comment: ${JSON.stringify(record.raw.slice(0, 40))}`);
}

test("graphql-sse: messageCreated over SSE with event ids, a resume by Last-Event-ID, a query, a refusal", async (t) => {
  const ann = await signUp("Ann");
  const bob = await signUp("Bob");
  const eve = await signUp("Eve");
  const room = await roomOf(ann, [bob], "sse");
  const { client, state } = sseClient(bob.token);
  t.after(() => client.dispose());
  const live = sseCollect(client, MESSAGE_CREATED_TEXT, { room });
  await eventually(() => live.connected || live.errors.length > 0, "the event stream");
  assert.deepEqual(live.errors, []);
  await sleep(1000);
  const posted = [];
  for (let i = 0; i < 3; i++) posted.push(await post(ann, room, `sse ${i}`));
  await eventually(() => live.results.length >= 3 || live.errors.length > 0, "3 messages over SSE");
  assert.deepEqual(live.errors, []);
  assert.deepEqual(live.data("messageCreated").map((m) => m.seq), [1, 2, 3]);
  assert.deepEqual(live.data("messageCreated").map((m) => m.id), posted.map((m) => m.id));
  const [first] = state.responses;
  assert.equal(first.method, "POST");
  assert.equal(first.headers.authorization, `Bearer ${bob.token}`);
  assert.equal(first.headers["last-event-id"], undefined);
  assertEventStream(first);
  const nexts = first.events.filter((e) => e.event === "next");
  assert.deepEqual(nexts.map((e) => e.id), posted.map((m) => m.id), "each event's id is its message's id");
  assert.equal(state.lastEventId, posted[2].id);
  live.dispose();
  assert.equal(first.signal.aborted, true, "disposing aborts the request");

  // Away: three more are posted. The same client subscribes again; its headers function sends
  // the last event id, and the server resumes after it (the query has no `after`).
  for (let i = 3; i < 6; i++) posted.push(await post(ann, room, `sse ${i}`));
  const resumed = sseCollect(client, MESSAGE_CREATED_TEXT, { room });
  await eventually(() => resumed.results.length >= 3 || resumed.errors.length > 0, "the 3 missed messages");
  assert.deepEqual(resumed.errors, []);
  assert.equal(state.responses[1].headers["last-event-id"], posted[2].id);
  assertEventStream(state.responses[1]);
  posted.push(await post(ann, room, "sse live again"));
  await eventually(() => resumed.results.length >= 4 || resumed.errors.length > 0, "the live message after resuming");
  await sleep(500);
  assert.deepEqual(resumed.errors, []);
  assert.deepEqual(resumed.data("messageCreated").map((m) => m.seq), [4, 5, 6, 7], "nothing missed, nothing twice");
  assert.deepEqual(resumed.data("messageCreated").map((m) => m.id), posted.slice(3).map((m) => m.id));
  assert.equal(state.lastEventId, posted[6].id);
  resumed.dispose();

  // A query over SSE: one result, then complete.
  const me = sseCollect(client, "query { me { name } }", {});
  await eventually(() => me.completed || me.errors.length > 0, "the query's complete");
  assert.deepEqual(me.errors, []);
  assert.equal(me.results.length, 1, JSON.stringify(me.results));
  assert.deepEqual(me.results[0].data, { me: { name: "Bob" } });
  assert.equal(me.results[0].errors, undefined);

  // Not a member: a `next` with the error, then `complete` (a 200 stream, not a network error).
  const eves = sseClient(eve.token);
  t.after(() => eves.client.dispose());
  const refused = sseCollect(eves.client, MESSAGE_CREATED_TEXT, { room });
  await eventually(() => refused.completed || refused.errors.length > 0, "Eve's refusal");
  assert.deepEqual(refused.errors, []);
  assert.equal(refused.results.length, 1);
  assert.deepEqual(codesOf(refused.results[0]), ["FORBIDDEN"]);
  assert.equal(eves.state.responses[0].status, 200);
  assert.deepEqual(eves.state.responses[0].events.filter((e) => !e.comment).map((e) => e.event), ["next", "complete"]);
});

test("graphql-sse: roomEvents ids are cursors, and Last-Event-ID wins over the query's after", async (t) => {
  const ann = await signUp("Ann");
  const bob = await signUp("Bob");
  const room = await roomOf(ann, [bob], "sse events");
  for (let i = 0; i < 3; i++) await post(ann, room, `before ${i}`);
  const log = await graphql(
    "query($room: ID!) { room(id: $room) { latestEventCursor events { edges { cursor } } } }",
    { room },
    bob.token,
  );
  const oldest = log.room.events.edges[0].cursor;
  const { client, state } = sseClient(bob.token);
  t.after(() => client.dispose());
  state.lastEventId = log.room.latestEventCursor; // as if this client had seen everything so far
  const events = sseCollect(client, ROOM_EVENTS_TEXT, { room, after: oldest });
  await eventually(() => events.connected || events.errors.length > 0, "the event stream");
  await sleep(1000);
  const message = await post(ann, room, "after the cursor");
  await eventually(() => events.results.length >= 1 || events.errors.length > 0, "the new event");
  await sleep(500);
  assert.deepEqual(events.errors, []);
  const received = events.data("roomEvents");
  assert.equal(received.length, 1, `only what follows Last-Event-ID: ${JSON.stringify(received)}`);
  assert.equal(received[0].__typename, "MessageCreated");
  assert.equal(received[0].message.id, message.id);
  assert.equal(state.responses[0].headers["last-event-id"], log.room.latestEventCursor);
  const nexts = state.responses[0].events.filter((e) => e.event === "next");
  assert.deepEqual(nexts.map((e) => e.id), [received[0].cursor], "the event's id is its cursor");
  assert.equal(state.lastEventId, received[0].cursor);
  events.dispose();
});

// ---------------------------------------------------------------------------------------------
// 4. graphql-http's audit of the GraphQL-over-HTTP spec.

test("graphql-http audit: every MUST and SHOULD holds", async () => {
  const audits = serverAudits({ url: URL_ });
  const results = [];
  for (const audit of audits) {
    try {
      results.push(await audit.fn());
    } catch (error) {
      // graphql-http throws only on what it cannot judge at all (e.g. an unreadable body).
      results.push({ id: audit.id, name: audit.name, status: audit.name.startsWith("MAY") ? "notice" : "error", reason: `fatal: ${error}` });
    }
  }
  const ok = results.filter((r) => r.status === "ok");
  console.log(`graphql-http audit: ${results.length} audits, ${ok.length} ok`);
  const failing = results.filter((r) => r.status !== "ok");
  for (const result of failing) {
    const declined = DECLINED_AUDITS.has(result.id) ? ` (declined: ${DECLINED_AUDITS.get(result.id)})` : "";
    console.log(`graphql-http audit failed [${result.status}] ${result.id} ${result.name}: ${result.reason}${declined}`);
  }
  const binding = failing.filter((r) => !r.name.startsWith("MAY") && !DECLINED_AUDITS.has(r.id));
  assert.deepEqual(binding.map((r) => `${r.id} ${r.name}: ${r.reason}`), []);
});
