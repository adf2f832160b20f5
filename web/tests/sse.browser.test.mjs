// Live updates over Server-Sent Events in Chromium (Playwright driving Debian's Chromium), through
// the page's own code: Alice and Bob pick "SSE" in the page's setting (kept across a reload, and no
// WebSocket is opened then); Carol's and Dave's pages stay on "auto" while their WebSockets fail
// (Carol's upgrade is closed at once, Dave's never answers) and must end up live on SSE. Midway
// pytest restarts the server every page streams from (SIGTERM, then again on the same port) while
// it posts through another server on the same database and Redis, before, during and after. Each
// page's EventSource reconnects by itself with Last-Event-ID: every message must show exactly once
// and in order, and every stream must have delivered each message exactly once.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { createInterface } from "node:readline";
import { randomUUID } from "node:crypto";

import { chromium } from "playwright-core";

const SERVER = process.env.CHAT_SERVER_URL;
const ARTIFACTS = process.env.CHAT_ARTIFACTS ?? "test-artifacts/browser-sse";
const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";
assert.ok(SERVER, "set CHAT_SERVER_URL");
mkdirSync(ARTIFACTS, { recursive: true });

const lines = createInterface({ input: process.stdin });
const fromPytest = lines[Symbol.asyncIterator]();

/** Ask the pytest side to do something, and wait for its answer line. */
async function ask(request) {
  console.log(`PYTEST:${JSON.stringify(request)}`);
  const { value } = await fromPytest.next();
  return JSON.parse(value);
}

const PASSWORD = "correct horse battery";
const LIVE = 30000; // ms for anything that should arrive live (the machine is shared)

/** Written into every page before its own scripts run: what each EventSource did (opens, errors,
 * the events it delivered) and how many WebSockets the page opened. The page's code still uses
 * the browser's EventSource; this only listens first. */
function instrument() {
  const NativeEventSource = window.EventSource;
  window.__streams = [];
  window.EventSource = class extends NativeEventSource {
    constructor(url, init) {
      super(url, init);
      const query = new URL(url, location.href).searchParams;
      const record = { operation: query.get("operationName"), variables: JSON.parse(query.get("variables") ?? "{}"), opens: 0, errors: 0, events: [], completed: false };
      window.__streams.push(record);
      this.addEventListener("open", () => record.opens++);
      this.addEventListener("error", () => record.errors++);
      this.addEventListener("next", (event) => record.events.push({ id: event.lastEventId, data: JSON.parse(event.data) }));
      this.addEventListener("complete", () => (record.completed = true));
    }
  };
  const NativeWebSocket = window.WebSocket;
  window.__sockets = 0;
  window.WebSocket = class extends NativeWebSocket {
    constructor(...args) {
      super(...args);
      window.__sockets++;
    }
  };
}

async function newPage(browser, { blockWebSocket } = {}) {
  const context = await browser.newContext();
  await context.addInitScript(instrument);
  if (blockWebSocket === "close") {
    // The upgrade is refused: the page's WebSocket closes before graphql-ws ever connected.
    await context.routeWebSocket(/\/graphql$/, (ws) => ws.close({ code: 4500, reason: "blocked by the test" }));
  } else if (blockWebSocket === "silent") {
    // A proxy that takes the upgrade and then forwards nothing: graphql-ws is never acknowledged.
    await context.routeWebSocket(/\/graphql$/, () => undefined);
  }
  const page = await context.newPage();
  // Every request of an EventSource that reached a server, with the headers it sent
  // (Last-Event-ID on reconnections). An attempt that found the server still down has no
  // response (null, left out): the browser reports only provisional headers for it, which may
  // lack Last-Event-ID though it was to be sent, and no server saw it.
  page.__eventStreams = [];
  page.on("request", (request) => {
    if (request.resourceType() !== "eventsource") return;
    page.__eventStreams.push(
      request.response().then(async (response) =>
        response === null
          ? null
          : {
              operation: new URL(request.url()).searchParams.get("operationName"),
              lastEventId: (await request.allHeaders())["last-event-id"] ?? null,
            },
      ),
    );
  });
  return page;
}

async function signUp(page, name) {
  const email = `${name.toLowerCase()}-${randomUUID()}@example.com`;
  await page.goto(SERVER);
  await page.getByTestId("name").fill(name);
  await page.getByTestId("email").fill(email);
  await page.getByTestId("password").fill(PASSWORD);
  await page.getByTestId("submit").click();
  await page.getByTestId("me").filter({ hasText: name }).waitFor();
  await connected(page);
}

const connected = (page, timeout = LIVE) => page.getByTestId("connection").filter({ hasText: /^connected$/ }).waitFor({ timeout });
const liveOn = (page, transport, timeout = LIVE) =>
  page.getByTestId("live-transport").filter({ hasText: new RegExp(`^${transport}$`) }).waitFor({ timeout });

async function say(page, body) {
  await page.getByTestId("draft").fill(body);
  await page.getByTestId("send").click();
}

const seen = (page, body, timeout = LIVE) =>
  page.getByTestId("messages").getByText(body, { exact: true }).waitFor({ timeout });

/** What the page shows, top to bottom: each message's sequence number and body. */
const timelineOf = (page) =>
  page
    .getByTestId("messages")
    .locator("li[data-seq]")
    .evaluateAll((items) => items.map((li) => ({ seq: Number(li.dataset.seq), body: li.querySelector(".body").textContent })));

/** The MessageCreated events the page's `operation` streams delivered for the room: how many times
 * each event (by its cursor) and each message (by its id, where the operation asks for it). */
async function deliveries(page, operation, room) {
  const streams = await page.evaluate(() => window.__streams);
  const events = {};
  const messages = {};
  for (const stream of streams) {
    if (stream.operation !== operation || stream.variables.room !== room) continue;
    for (const { data } of stream.events) {
      const event = data.data?.roomEvents;
      if (event?.__typename !== "MessageCreated") continue;
      events[event.cursor] = (events[event.cursor] ?? 0) + 1;
      if (event.message.id) messages[event.message.id] = (messages[event.message.id] ?? 0) + 1;
    }
  }
  return { events, messages };
}

/** The room's messages, newest last, as another API client reads them. */
async function history(token, room) {
  const response = await fetch(`${SERVER}/graphql`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${token}` },
    body: JSON.stringify({
      query: "query($id: ID!) { room(id: $id) { messages(first: 100) { edges { node { id seq body } } } } }",
      variables: { id: room },
    }),
  });
  const result = await response.json();
  assert.ok(result.data?.room, JSON.stringify(result));
  return result.data.room.messages.edges.map((edge) => edge.node).sort((a, b) => a.seq - b.seq);
}

test("pages live on SSE (chosen, or when the WebSocket fails) miss nothing and see nothing twice across a server restart", async () => {
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
      "--disable-component-update", "--disable-sync"],
  });
  try {
    const alice = await newPage(browser);
    const bob = await newPage(browser);
    const carol = await newPage(browser, { blockWebSocket: "close" });
    const dave = await newPage(browser, { blockWebSocket: "silent" });

    // Alice and Bob choose SSE in the page; the choice outlives a reload, and then no WebSocket opens.
    for (const [page, name] of [[alice, "Alice"], [bob, "Bob"]]) {
      await signUp(page, name);
      await liveOn(page, "websocket"); // auto, with a WebSocket that works
      await page.getByTestId("transport").selectOption("sse");
      await liveOn(page, "sse");
      await connected(page);
      await page.reload();
      await page.getByTestId("me").filter({ hasText: name }).waitFor();
      await liveOn(page, "sse");
      await connected(page);
      assert.equal(await page.getByTestId("transport").inputValue(), "sse");
      assert.equal(await page.evaluate(() => localStorage.getItem("chat.transport")), "sse");
      const cookie = (await page.context().cookies(`${SERVER}/graphql`)).find((c) => c.name === "chat_sse_token");
      assert.ok(cookie, "POST /graphql/sse-session set the chat_sse_token cookie");
      assert.equal(cookie.httpOnly, true);
      assert.equal(cookie.path, "/graphql");
    }
    // Carol and Dave stay on auto; their WebSockets fail, one at once and one by silence.
    for (const [page, name] of [[carol, "Carol"], [dave, "Dave"]]) {
      await signUp(page, name);
      await liveOn(page, "sse");
      assert.equal(await page.getByTestId("transport").inputValue(), "auto");
    }

    await alice.getByTestId("new-room").fill("streams");
    await alice.getByTestId("new-room-kind").selectOption("PUBLIC"); // joined by id below
    await alice.getByTestId("create-room").click();
    await alice.getByTestId("room-name").filter({ hasText: "streams" }).waitFor();
    const room = (await alice.getByTestId("room-id").textContent()).replace("#", "").trim();
    for (const page of [bob, carol, dave]) {
      await page.getByTestId("join-id").fill(room);
      await page.getByTestId("join-room").click();
      await page.getByTestId("room-name").filter({ hasText: "streams" }).waitFor();
    }
    // Dave comes back with the room already his: the page subscribes at once, over the WebSocket
    // that never answers (most likely: the page gives it 4 s), and those subscriptions move to SSE.
    await dave.reload();
    await dave.getByTestId("rooms").getByRole("button", { name: /streams/ }).click();
    await dave.getByTestId("room-name").filter({ hasText: "streams" }).waitFor();
    await liveOn(dave, "sse");
    await connected(dave);
    const pages = [alice, bob, carol, dave];
    for (const page of pages) await page.getByTestId("members").filter({ hasText: "Alice, Bob, Carol, Dave" }).waitFor({ timeout: LIVE });
    // Presence over SSE too: Alice sees Dave online.
    await alice.getByTestId("members").locator('[data-online="true"]', { hasText: "Dave" }).waitFor({ timeout: LIVE });

    const expected = [];
    /** One message through a page, seen live by every page before the next one goes. */
    const chat = async (page, body) => {
      await say(page, body);
      expected.push(body);
      for (const other of pages) await seen(other, body);
    };
    await chat(alice, "Before 1 from Alice");
    await chat(bob, "Before 2 from Bob");
    await chat(carol, "Before 3 from Carol");
    await chat(dave, "Before 4 from Dave");
    await alice.screenshot({ path: `${ARTIFACTS}/alice-sse.png` });
    await carol.screenshot({ path: `${ARTIFACTS}/carol-auto-fallback.png` });
    for (const page of [alice, bob]) assert.equal(await page.evaluate(() => window.__sockets), 0, "SSE chosen: no WebSocket");

    // From now on each page writes down every connection state it shows, and how many RoomEvents
    // EventSources it has made so far (the restart must not make new ones: EventSource resumes).
    const before = new Map();
    for (const page of pages) {
      await page.evaluate(() => {
        window.__states = [];
        const badge = document.querySelector('[data-testid="connection"]');
        new MutationObserver(() => window.__states.push(badge.textContent)).observe(badge, { subtree: true, childList: true, characterData: true });
      });
      const streams = (await page.evaluate(() => window.__streams)).filter((s) => s.operation === "RoomEvents");
      before.set(page, { streams: streams.length, opens: streams.at(-1)?.opens ?? 0 });
      page.__eventStreams = [];
    }

    // The restart: pytest posts as Bob through the other server while this one drains, while it
    // is down, and once it is back; it answers with the bodies in the order they were posted.
    const bobToken = await bob.evaluate(() => localStorage.getItem("chat.token"));
    const { posted } = await ask({ restart: true, room, token: bobToken });
    assert.ok(posted.length >= 5, JSON.stringify(posted));
    expected.push(...posted);
    for (const page of pages) await seen(page, posted.at(-1), 60000);
    for (const page of pages) await connected(page);

    await chat(alice, "After 1 from Alice");
    await chat(bob, "After 2 from Bob");
    await chat(carol, "After 3 from Carol");
    await chat(dave, "After 4 from Dave");

    // The server's own record, and every page's: each message once, in order.
    const stored = await history(bobToken, room);
    assert.deepEqual(stored.map((m) => m.body), expected);
    const names = ["alice", "bob", "carol", "dave"];
    for (const [index, page] of pages.entries()) {
      const name = names[index];
      await page.screenshot({ path: `${ARTIFACTS}/${name}-after-restart.png`, fullPage: true });
      const timeline = await timelineOf(page);
      assert.deepEqual(timeline.map((line) => line.body), expected, `${name}'s page`);
      assert.deepEqual(timeline.map((line) => line.seq), stored.map((m) => m.seq), `${name}'s page`);
      // The room's view: its stream delivered each message exactly once.
      for (const operation of ["RoomEvents"]) {
        const { events, messages } = await deliveries(page, operation, room);
        const log = async () =>
          JSON.stringify((await page.evaluate(() => window.__streams)).filter((s) => s.operation === operation)
            .map((s) => ({ ...s, events: s.events.map((e) => [e.id, e.data.data?.roomEvents?.__typename ?? e.data]) })));
        const twice = Object.entries(events).filter(([, count]) => count !== 1);
        assert.deepEqual(twice, [], `${name}: ${operation} delivered events more than once: ${await log()}`);
        assert.equal(Object.keys(events).length, stored.length, `${name}: ${operation} delivered ${JSON.stringify(events)}: ${await log()}`);
        if (operation === "RoomEvents") {
          for (const message of stored) assert.equal(messages[message.id], 1, `${name}: ${operation} delivered "${message.body}" ${messages[message.id] ?? 0} times: ${await log()}`);
        }
      }
      // The room list follows every room through one myRooms feed (no stream per room), which
      // reconnected too: the room's preview shows the newest message, posted after the restart.
      const operations = new Set((await page.evaluate(() => window.__streams)).map((s) => s.operation));
      assert.deepEqual([...operations].sort(), ["MyRoomChanges", "RoomEvents", "WhoIsOnline", "WhoTypes"], name);
      await page.getByTestId("rooms").locator(`li[data-room="${room}"]`).getByTestId("preview")
        .filter({ hasText: "After 4 from Dave" }).waitFor({ timeout: LIVE });
      // The restart broke the streams (the page said so), and the same EventSource reconnected
      // by itself, sending Last-Event-ID.
      const states = await page.evaluate(() => window.__states);
      assert.ok(states.includes("reconnecting"), `${name}: ${JSON.stringify(states)}`);
      assert.equal(states.at(-1), "connected", `${name}: ${JSON.stringify(states)}`);
      const streams = (await page.evaluate(() => window.__streams)).filter((s) => s.operation === "RoomEvents");
      assert.equal(streams.length, before.get(page).streams, `${name}: a new RoomEvents EventSource was made`);
      assert.ok(streams.at(-1).opens > before.get(page).opens, `${name}: the RoomEvents EventSource did not reconnect`);
      assert.equal(streams.at(-1).completed, false);
      // (Every RoomEvents request since is a reconnection of that one: each carried Last-Event-ID.)
      const requests = (await Promise.all(page.__eventStreams)).filter((request) => request !== null);
      const resumed = requests.filter((r) => r.operation === "RoomEvents");
      assert.ok(resumed.length > 0 && resumed.every((r) => r.lastEventId), `${name}: ${JSON.stringify(requests)}`);
      const cursors = new Set(streams.flatMap((s) => s.events.map((e) => e.data.data?.roomEvents?.cursor)));
      for (const request of resumed) assert.ok(cursors.has(request.lastEventId), `${name}: Last-Event-ID ${request.lastEventId}`);
      assert.equal(await page.getByTestId("live-transport").textContent(), "sse");
    }

    // Signing out ends the SSE session: DELETE /graphql/sse-session, and the cookie is gone.
    const cleared = alice.waitForResponse((r) => r.url().endsWith("/graphql/sse-session") && r.request().method() === "DELETE");
    await alice.getByRole("button", { name: "Log out" }).click();
    assert.equal((await cleared).status(), 204);
    await alice.getByTestId("submit").waitFor();
    const left = (await alice.context().cookies(`${SERVER}/graphql`)).filter((c) => c.name === "chat_sse_token");
    assert.deepEqual(left, []);
  } catch (error) {
    for (const [index, context] of browser.contexts().entries()) {
      for (const [page_index, page] of context.pages().entries()) {
        await page.screenshot({ path: `${ARTIFACTS}/failed-${index}-${page_index}.png`, fullPage: true }).catch(() => {});
      }
    }
    throw error;
  } finally {
    await browser.close();
    lines.close();
  }
});
