// Two people chat in two browser contexts (Playwright driving Debian's Chromium) against two real
// servers on the same database and Redis: Alice's page on CHAT_SERVER_URL, Bob's on
// CHAT_OTHER_URL. Midway the test asks pytest to restart Alice's server (a deploy) while Bob
// posts: her page must reconnect and resume with `after`, so the message posted meanwhile
// appears, and Bob's page, which stays connected, must never see her go offline.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { createInterface } from "node:readline";
import { randomUUID } from "node:crypto";

import { chromium } from "playwright-core";

const SERVER = process.env.CHAT_SERVER_URL;
const OTHER = process.env.CHAT_OTHER_URL ?? SERVER;
const ARTIFACTS = process.env.CHAT_ARTIFACTS ?? "test-artifacts/browser";
const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";
assert.ok(SERVER, "set CHAT_SERVER_URL");
mkdirSync(ARTIFACTS, { recursive: true });

const lines = createInterface({ input: process.stdin });
const fromPytest = lines[Symbol.asyncIterator]();

/** Ask the pytest side to do something, and wait for its answer line. */
async function ask(request) {
  console.log(`PYTEST:${request}`);
  const { value } = await fromPytest.next();
  return JSON.parse(value);
}

const PASSWORD = "correct horse battery";

/** Signs up through the page; the email, for logging in later. */
async function signUp(page, name, server = SERVER) {
  const email = `${name.toLowerCase()}-${randomUUID()}@example.com`;
  await page.goto(server);
  await page.getByTestId("name").fill(name);
  await page.getByTestId("email").fill(email);
  await page.getByTestId("password").fill(PASSWORD);
  await page.getByTestId("submit").click();
  await signedIn(page, name);
  return email;
}

async function logIn(page, name, email) {
  await page.goto(SERVER);
  await page.getByRole("button", { name: "I have an account" }).click();
  await page.getByTestId("email").fill(email);
  await page.getByTestId("password").fill(PASSWORD);
  await page.getByTestId("submit").click();
  await signedIn(page, name);
}

async function signedIn(page, name) {
  await page.getByTestId("me").filter({ hasText: name }).waitFor();
  await page.getByTestId("connection").filter({ hasText: "connected" }).waitFor();
}

/** A message posted over plain HTTP, as another client of the API would. */
async function post(token, room, body) {
  const response = await fetch(`${SERVER}/graphql`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${token}` },
    body: JSON.stringify({
      query: "mutation($room: ID!, $body: String!) { createMessage(room: $room, body: $body) { id } }",
      variables: { room, body },
    }),
  });
  const result = await response.json();
  assert.ok(result.data?.createMessage, JSON.stringify(result));
}

const seqsOf = (page) =>
  page.getByTestId("messages").locator("li[data-seq]").evaluateAll((items) => items.map((li) => Number(li.dataset.seq)));
const notice = (page, text) => page.getByTestId("notice").filter({ hasText: text }).waitFor({ timeout: 15000 });
const upTo = (n) => Array.from({ length: n }, (_, i) => i + 1);

async function say(page, body) {
  await page.getByTestId("draft").fill(body);
  await page.getByTestId("send").click();
}

const seen = (page, body) => page.getByTestId("messages").getByText(body, { exact: true }).waitFor({ timeout: 15000 });

test("two users chat live, a page resumes after the server restarts, history pages back", async () => {
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
      "--disable-component-update", "--disable-sync"],
  });
  try {
    const alice = await (await browser.newContext()).newPage();
    const bob = await (await browser.newContext()).newPage();
    const aliceEmail = await signUp(alice, "Alice");
    await signUp(bob, "Bob", OTHER);

    await alice.getByTestId("new-room").fill("lobby");
    await alice.getByTestId("new-room-kind").selectOption("PUBLIC"); // joined by id below
    await alice.getByTestId("create-room").click();
    await alice.getByTestId("room-name").filter({ hasText: "lobby" }).waitFor();
    const room = (await alice.getByTestId("room-id").textContent()).replace("#", "").trim();

    await bob.getByTestId("join-id").fill(room);
    await bob.getByTestId("join-room").click();
    await bob.getByTestId("room-name").filter({ hasText: "lobby" }).waitFor();
    await sleep(500);

    await say(alice, "Hello Bob");
    await seen(bob, "Hello Bob");
    await say(bob, "Hi Alice");
    await seen(alice, "Hi Alice");
    // Bob joined after Alice's page loaded: the room's event log told her page, live.
    await notice(alice, "Bob joined");
    await alice.getByTestId("members").filter({ hasText: "Alice, Bob" }).waitFor();
    await alice.screenshot({ path: `${ARTIFACTS}/alice.png` });
    await bob.screenshot({ path: `${ARTIFACTS}/bob.png` });

    // Typing shows on the other side, and clears a few seconds after the last keystroke.
    await bob.getByTestId("draft").pressSequentially("I am typ", { delay: 30 });
    await alice.getByTestId("typing").filter({ hasText: "Bob is typing" }).waitFor();
    await alice.getByTestId("typing").filter({ hasText: /^$/ }).waitFor({ timeout: 10000 });
    await bob.getByTestId("draft").fill("");

    // Edits, deletes and reactions appear on the other side.
    const hello = alice.getByTestId("messages").locator("li", { hasText: "Hello Bob" });
    await hello.getByTestId("edit").click();
    await alice.getByTestId("edit-body").fill("Hello Bob, edited");
    await alice.getByTestId("save-edit").click();
    await seen(bob, "Hello Bob, edited");
    await bob.getByTestId("messages").locator("li", { hasText: "Hello Bob, edited" }).getByText("(edited)").waitFor();
    await bob.getByTestId("messages").locator("li", { hasText: "Hello Bob, edited" }).getByTestId("react-👍").click();
    await alice.getByTestId("messages").locator("li", { hasText: "Hello Bob, edited" }).getByTestId("reaction").filter({ hasText: "👍 1" }).waitFor();
    await say(alice, "A mistake");
    await seen(bob, "A mistake");
    await alice.getByTestId("messages").locator("li", { hasText: "A mistake" }).getByTestId("delete").click();
    await bob.getByTestId("messages").locator("li.deleted", { hasText: "message deleted" }).waitFor();
    // Avatars are drawn by the server from each user's id (nothing about an email): they load.
    await alice.waitForFunction(() =>
      [...document.querySelectorAll('img[src^="/avatars/"]')].some((img) => img.complete && img.naturalWidth > 0),
    );
    await alice.screenshot({ path: `${ARTIFACTS}/alice-edits-reactions.png` });

    // Presence: each sees the other online.
    await alice.getByTestId("members").locator('[data-online="true"]', { hasText: "Bob" }).waitFor();
    await bob.getByTestId("members").locator('[data-online="true"]', { hasText: "Alice" }).waitFor();
    // From now on Bob's page writes down every change of who is online.
    await bob.evaluate(() => {
      window.__presence = [];
      const members = document.querySelector('[data-testid="members"]');
      const record = () =>
        window.__presence.push([...members.querySelectorAll('[data-online="true"]')].map((span) => span.textContent.replace(", ", "")));
      new MutationObserver(record).observe(members, { subtree: true, childList: true, attributes: true });
      record();
    });

    // A deploy: pytest stops the server these pages talk to, posts as Bob through another
    // server on the same database and Redis, then starts this one again.
    const bobToken = await bob.evaluate(() => localStorage.getItem("chat.token"));
    const { posted } = await ask(JSON.stringify({ restart: true, room, token: bobToken, body: "Sent while you were away" }));
    assert.equal(posted, true);
    await alice.getByTestId("connection").filter({ hasText: "connected" }).waitFor({ timeout: 30000 });
    await seen(alice, "Sent while you were away");
    await say(alice, "Back again");
    await seen(bob, "Back again");
    await seen(alice, "Back again"); // her own page may show it after his (a loaded machine)
    assert.deepEqual(await seqsOf(alice), upTo(5));
    // Alice's server restarted; she never went offline on Bob's page.
    const presence = await bob.evaluate(() => window.__presence);
    assert.ok(presence.length > 0);
    assert.ok(presence.every((online) => online.includes("Alice")), JSON.stringify(presence));
    await alice.screenshot({ path: `${ARTIFACTS}/alice-after-restart.png` });

    // More than a page of history (30): Alice logs in again elsewhere, opens the room, sees the
    // newest page, and loads the older messages; the first page, still open, got them all live.
    for (let i = 1; i <= 35; i++) await post(bobToken, room, `Filler ${i}`);
    await seen(alice, "Filler 35");
    const laptop = await (await browser.newContext()).newPage();
    await logIn(laptop, "Alice", aliceEmail);
    await laptop.getByTestId("rooms").getByRole("button", { name: /lobby/ }).click();
    await seen(laptop, "Filler 35");
    assert.deepEqual(await seqsOf(laptop), upTo(40).slice(-30));
    await laptop.getByTestId("older").click();
    await seen(laptop, "Hello Bob, edited");
    await laptop.getByTestId("older").waitFor({ state: "detached" });
    assert.deepEqual(await seqsOf(laptop), upTo(40));
    assert.deepEqual(await seqsOf(alice), upTo(40));

    // Unread badges: Bob, looking at the lobby, gets a badge for another room that counts up,
    // and clears when he opens it.
    await alice.getByTestId("new-room").fill("side");
    await alice.getByTestId("new-room-kind").selectOption("PUBLIC"); // joined by id below
    await alice.getByTestId("create-room").click();
    await alice.getByTestId("room-name").filter({ hasText: "side" }).waitFor();
    const side = (await alice.getByTestId("room-id").textContent()).replace("#", "").trim();
    await bob.getByTestId("join-id").fill(side);
    await bob.getByTestId("join-room").click();
    await bob.getByTestId("room-name").filter({ hasText: "side" }).waitFor();
    await bob.getByTestId("rooms").getByRole("button", { name: /lobby/ }).click();
    await bob.getByTestId("room-name").filter({ hasText: "lobby" }).waitFor();
    await sleep(500);
    await say(alice, "For the side room");
    await bob.getByTestId(`unread-${side}`).filter({ hasText: "1" }).waitFor();
    await say(alice, "And another");
    await bob.getByTestId(`unread-${side}`).filter({ hasText: "2" }).waitFor();
    await bob.screenshot({ path: `${ARTIFACTS}/bob-unread.png` });
    await bob.getByTestId("rooms").getByRole("button", { name: /side/ }).click();
    await seen(bob, "And another");
    await bob.getByTestId(`unread-${side}`).waitFor({ state: "detached", timeout: 10000 });
    await bob.getByTestId("rooms").getByRole("button", { name: /lobby/ }).click();
    await laptop.screenshot({ path: `${ARTIFACTS}/alice-logged-in-history.png`, fullPage: true });

    // Bob leaves: both of Alice's pages see it live, and the members line loses him.
    await alice.getByTestId("rooms").getByRole("button", { name: /lobby/ }).click();
    await alice.getByTestId("room-name").filter({ hasText: "lobby" }).waitFor();
    await bob.getByTestId("room-name").filter({ hasText: "lobby" }).waitFor();
    await bob.getByTestId("leave-room").click();
    await bob.getByText("Pick or create a room.").waitFor();
    for (const page of [alice, laptop]) {
      await notice(page, "Bob left");
      await page.getByTestId("members").filter({ hasText: /^Alice$/ }).waitFor();
    }
    await alice.screenshot({ path: `${ARTIFACTS}/alice-sees-bob-leave.png` });
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

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
