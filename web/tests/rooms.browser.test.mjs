// Rooms people control, in Chromium (Playwright driving Debian's Chromium) against a real server
// (gunicorn, two workers, Postgres and Redis): a PRIVATE room nobody else can see until invited
// (not in their list, not in the directory, its address and id "not found"), then an invite link
// opened signed in and signed out; a promotion that shows live; a kick that ends the kicked
// person's view at once; and a direct message, started from a member's name, that appears in the
// other person's room list without a reload (through the one `myRooms` subscription).
// Every wait is on something the page shows; no fixed sleeps.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { randomUUID } from "node:crypto";

import { chromium } from "playwright-core";

const SERVER = process.env.CHAT_SERVER_URL;
const ARTIFACTS = process.env.CHAT_ARTIFACTS ?? "test-artifacts/browser-rooms";
const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";
const LIVE = 20000; // ms for anything that should arrive live (the machine is shared)
const PASSWORD = "correct horse battery";
assert.ok(SERVER, "set CHAT_SERVER_URL");
mkdirSync(ARTIFACTS, { recursive: true });

/** A page that counts its room-list reads (the `MyRooms` query): the list is read once, and
 * then only `myRooms` changes it. */
async function newPage(browser) {
  const page = await (await browser.newContext()).newPage();
  page.__listReads = 0;
  page.on("request", (request) => {
    if (request.method() === "POST" && request.url().endsWith("/graphql") && request.postDataJSON()?.operationName === "MyRooms") {
      page.__listReads++;
    }
  });
  // Every graphql-ws frame the page sends and receives, parsed.
  page.__frames = [];
  page.__sockets = 0;
  page.on("websocket", (socket) => {
    page.__sockets++;
    const record = (direction) => (frame) => {
      try {
        page.__frames.push({ direction, ...JSON.parse(frame.payload) });
      } catch {
        // not JSON: nothing of graphql-ws
      }
    };
    socket.on("framesent", record("sent"));
    socket.on("framereceived", record("received"));
  });
  return page;
}

/** The ids of the page's subscriptions to an operation on a room (over its WebSocket). */
const subscriptionsOf = (page, operation, room) =>
  page.__frames
    .filter((f) => f.direction === "sent" && f.type === "subscribe" && f.payload?.operationName === operation)
    .filter((f) => room === undefined || f.payload.variables?.room === room)
    .map((f) => f.id);
const receivedFor = (page, id) => page.__frames.filter((f) => f.direction === "received" && f.id === id);

async function fillSignUp(page, name) {
  await page.getByTestId("name").fill(name);
  await page.getByTestId("email").fill(`${name.toLowerCase()}-${randomUUID()}@example.com`);
  await page.getByTestId("password").fill(PASSWORD);
  await page.getByTestId("submit").click();
  await page.getByTestId("me").filter({ hasText: name }).waitFor();
  await page.getByTestId("connection").filter({ hasText: /^connected$/ }).waitFor({ timeout: LIVE });
}

async function signUp(page, name) {
  await page.goto(SERVER);
  await fillSignUp(page, name);
}

async function createRoom(page, name, { kind, topic } = {}) {
  await page.getByTestId("new-room").fill(name);
  if (topic) await page.getByTestId("new-room-topic").fill(topic);
  if (kind) await page.getByTestId("new-room-kind").selectOption(kind);
  await page.getByTestId("create-room").click();
  await page.getByTestId("room-name").filter({ hasText: name }).waitFor();
  return (await page.getByTestId("room-id").textContent()).replace("#", "").trim();
}

async function say(page, body) {
  await page.getByTestId("draft").fill(body);
  await page.getByTestId("send").click();
}

const seen = (page, body) => page.getByTestId("messages").getByText(body, { exact: true }).waitFor({ timeout: LIVE });
const notice = (page, text) => page.getByTestId("notice").filter({ hasText: text }).waitFor({ timeout: LIVE });
/** Waits until `condition()` holds (checked every 50 ms, for up to LIVE ms). */
async function eventually(condition, what) {
  const deadline = Date.now() + LIVE;
  while (!condition()) {
    assert.ok(Date.now() < deadline, `timed out waiting: ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** Does `act` on the page and waits for the answer to the mutation it sends. */
async function done(page, operation, act) {
  const answered = page.waitForResponse((r) => r.url().endsWith("/graphql") && r.request().postDataJSON()?.operationName === operation);
  await act();
  const body = await (await answered).json();
  assert.ok(body.data && !body.errors, JSON.stringify(body));
}
const listed = (page, list, room) => page.getByTestId(list).locator(`li[data-room="${room}"]`);
/** A member's name in the room's members line (a button: it opens what one can do with them). */
const member = (page, name) => page.getByTestId("members").locator("button.member", { hasText: new RegExp(`^${name}$`) });

test("private rooms, invites, roles, a kick that ends the view, and a direct message that arrives live", async () => {
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
      "--disable-component-update", "--disable-sync"],
  });
  try {
    const alice = await newPage(browser);
    const bob = await newPage(browser);
    const carol = await newPage(browser);
    await signUp(alice, "Alice");
    await signUp(bob, "Bob");
    await signUp(carol, "Carol");

    // A PUBLIC room (in the directory), and a room made with the dialog's defaults: PRIVATE.
    const plaza = await createRoom(alice, "plaza", { kind: "PUBLIC", topic: "everyone welcome" });
    assert.equal(await alice.getByTestId("new-room-kind").inputValue(), "PRIVATE");
    const secret = await createRoom(alice, "secret", { topic: "our plans" });
    assert.equal(await alice.getByTestId("room-kind").textContent(), "🔒 private");
    await alice.getByTestId("room-topic").filter({ hasText: "our plans" }).waitFor();
    await say(alice, "Secret hello");
    await seen(alice, "Secret hello");

    // 1. Carol cannot see the private room: the directory lists the public one alone (also when
    // searched by the private one's name), her list gets the public one when she joins it there
    // and never the private one, and its address and its id are "not found".
    await carol.getByTestId("open-directory").click();
    const plazaEntry = carol.getByTestId("directory").locator(`li[data-room="${plaza}"]`);
    await plazaEntry.filter({ hasText: "everyone welcome" }).waitFor({ timeout: LIVE });
    assert.equal(await carol.getByTestId("directory").locator(`li[data-room="${secret}"]`).count(), 0);
    await carol.getByTestId("directory-search").fill("secret");
    await carol.getByTestId("directory-go").click();
    await carol.getByTestId("directory-empty").waitFor({ timeout: LIVE });
    await carol.getByTestId("directory-search").fill("PLAZ");
    await carol.getByTestId("directory-go").click();
    await plazaEntry.getByTestId("directory-join").click();
    await carol.getByTestId("room-name").filter({ hasText: "plaza" }).waitFor();
    await listed(carol, "rooms", plaza).waitFor();
    assert.equal(await listed(carol, "rooms", secret).count(), 0);
    await carol.screenshot({ path: `${ARTIFACTS}/carol-directory.png` });
    await carol.goto(`${SERVER}/#/room/${secret}`);
    await carol.getByTestId("room-not-found").waitFor({ timeout: LIVE });
    assert.equal(await carol.getByTestId("messages").count(), 0);
    await carol.screenshot({ path: `${ARTIFACTS}/carol-not-found.png` });
    await carol.getByTestId("join-id").fill(secret);
    await carol.getByTestId("join-room").click();
    await carol.getByTestId("rooms-error").filter({ hasText: "Room not found" }).waitFor();
    assert.equal(await listed(carol, "rooms", secret).count(), 0);

    // Alice (its owner) makes an invite link; Carol, signed in, opens it: she joins, the room
    // opens with its history, and it is in her list.
    await alice.getByTestId("rooms").getByRole("button", { name: "secret" }).click();
    await alice.getByTestId("create-invite").click();
    const link = await alice.getByTestId("invite-link").inputValue();
    assert.match(link, new RegExp(`^${SERVER}/#/invite/[^/]+$`));
    await carol.goto(link);
    await carol.getByTestId("room-name").filter({ hasText: "secret" }).waitFor({ timeout: LIVE });
    await seen(carol, "Secret hello");
    await listed(carol, "rooms", secret).waitFor();
    await notice(alice, "Carol joined");
    await carol.screenshot({ path: `${ARTIFACTS}/carol-invited.png` });

    // Dave opens the same link signed out: the page asks him to sign up first, then joins.
    const dave = await newPage(browser);
    await dave.goto(link);
    await dave.getByTestId("invite-pending").waitFor();
    await fillSignUp(dave, "Dave");
    await dave.getByTestId("room-name").filter({ hasText: "secret" }).waitFor({ timeout: LIVE });
    await seen(dave, "Secret hello");
    await dave.getByTestId("members").filter({ hasText: "Alice, Carol, Dave" }).waitFor({ timeout: LIVE });
    await dave.screenshot({ path: `${ARTIFACTS}/dave-invited-after-sign-up.png` });

    // Alice renames the room and changes its topic: the open views follow its log, and Carol's
    // room list (where the room is not open) follows myRooms.
    await carol.getByTestId("rooms").getByRole("button", { name: "plaza" }).click();
    await carol.getByTestId("room-name").filter({ hasText: "plaza" }).waitFor();
    await alice.getByTestId("edit-room").click();
    await alice.getByTestId("room-settings-name").fill("secret plans");
    await alice.getByTestId("room-settings-topic").fill("revised plans");
    await alice.getByTestId("room-settings-save").click();
    await dave.getByTestId("room-topic").filter({ hasText: /^revised plans$/ }).waitFor({ timeout: LIVE });
    await dave.getByTestId("room-name").filter({ hasText: "secret plans" }).waitFor({ timeout: LIVE });
    await listed(carol, "rooms", secret).getByRole("button", { name: "secret plans" }).waitFor({ timeout: LIVE });
    await carol.getByTestId("rooms").getByRole("button", { name: "secret plans" }).click();
    await carol.getByTestId("room-topic").filter({ hasText: /^revised plans$/ }).waitFor();

    // Roles: members are listed with theirs; Alice promotes Dave, live on every page (his own
    // page now offers him an invite link, as a moderator).
    assert.equal(await member(dave, "Alice").getAttribute("data-role"), "OWNER");
    assert.equal(await dave.getByTestId("create-invite").count(), 0);
    await member(alice, "Dave").click();
    await alice.getByTestId("member-card").getByTestId("member-role").filter({ hasText: "member" }).waitFor();
    await alice.getByTestId("member-make-moderator").click();
    await alice.getByTestId("member-card").getByTestId("member-role").filter({ hasText: "moderator" }).waitFor({ timeout: LIVE });
    for (const page of [carol, dave]) {
      await page.getByTestId("members").locator('[data-role="MODERATOR"]', { hasText: "Dave" }).waitFor({ timeout: LIVE });
    }
    await dave.getByTestId("create-invite").waitFor({ timeout: LIVE });
    // A moderator acts over MEMBERs only: over Carol, not over Alice, the owner.
    await member(dave, "Carol").click();
    await dave.getByTestId("member-remove").waitFor();
    await member(dave, "Alice").click();
    await dave.getByTestId("member-card").filter({ hasText: "owner" }).waitFor();
    assert.equal(await dave.getByTestId("member-remove").count(), 0);
    assert.equal(await dave.getByTestId("member-make-member").count(), 0);

    // 2. A kick ends the kicked person's live view at once. Carol's view is live (she sees a
    // message as it is posted); Alice removes her; Carol's page says so, offers no composer,
    // and the room leaves her list; the server ended her room's subscription (FORBIDDEN, then
    // complete) and her myRooms said REMOVED. A message posted after reaches Dave, never Carol.
    await carol.getByTestId("live-transport").filter({ hasText: /^websocket$/ }).waitFor({ timeout: LIVE });
    await say(alice, "Before the kick");
    await seen(carol, "Before the kick");
    const [carolsLog] = subscriptionsOf(carol, "RoomEvents", secret).slice(-1);
    assert.ok(carolsLog, JSON.stringify(carol.__frames.filter((f) => f.type === "subscribe")));
    await member(alice, "Carol").click();
    await alice.getByTestId("member-card").filter({ hasText: "Carol" }).getByTestId("member-remove").click();
    await carol.getByTestId("room-ended").waitFor({ timeout: LIVE });
    assert.equal(await carol.getByTestId("draft").count(), 0);
    await listed(carol, "rooms", secret).waitFor({ state: "detached", timeout: LIVE });
    await notice(alice, "Carol was removed by Alice");
    await notice(dave, "Carol was removed by Alice");
    await say(alice, "After the kick");
    await seen(dave, "After the kick");
    await seen(alice, "After the kick");
    const carolsMessages = await carol.getByTestId("messages").locator(".body").allTextContents();
    assert.ok(carolsMessages.includes("Before the kick"), JSON.stringify(carolsMessages));
    assert.ok(!carolsMessages.includes("After the kick"), JSON.stringify(carolsMessages));
    await carol.getByTestId("room-ended").waitFor(); // still ended, nothing new shown
    // Her room's subscription is over: the server ended it (FORBIDDEN, then complete), or the
    // page did on myRooms' REMOVED, whichever came first.
    const over = () =>
      receivedFor(carol, carolsLog).at(-1)?.type === "complete" ||
      carol.__frames.some((f) => f.direction === "sent" && f.type === "complete" && f.id === carolsLog);
    await eventually(over, "Carol's room subscription ended");
    const ended = receivedFor(carol, carolsLog);
    const refusal = ended.find((f) => f.type === "next" && f.payload?.errors);
    const stopped = carol.__frames.some((f) => f.direction === "sent" && f.type === "complete" && f.id === carolsLog);
    if (refusal) {
      assert.equal(refusal.payload.errors[0].extensions.code, "FORBIDDEN", JSON.stringify(ended));
      assert.equal(ended.at(-1).type, "complete", JSON.stringify(ended));
    } else {
      assert.ok(stopped, JSON.stringify(ended));
    }
    assert.ok(!JSON.stringify(carol.__frames).includes("After the kick"), "a frame of Carol's page carried it");
    // The room list's live updates: one myRooms subscription (per connection), whatever the rooms.
    const feed = subscriptionsOf(carol, "MyRoomChanges");
    assert.equal(feed.length, carol.__sockets, JSON.stringify(feed));
    const removal = () =>
      receivedFor(carol, feed.at(-1)).some((f) => {
        const note = f.payload?.data?.myRooms;
        return note?.change === "REMOVED" && note.roomId === secret && note.room === null;
      });
    await eventually(removal, "myRooms said REMOVED to Carol");
    await carol.screenshot({ path: `${ARTIFACTS}/carol-removed.png` });
    // And the room is hidden from her again: its address is "not found".
    await carol.goto(`${SERVER}/#/room/${plaza}`);
    await carol.getByTestId("room-name").filter({ hasText: "plaza" }).waitFor({ timeout: LIVE });
    await carol.goto(`${SERVER}/#/room/${secret}`);
    await carol.getByTestId("room-not-found").waitFor({ timeout: LIVE });

    // Demote, mute, unmute, ban, each live: Dave, a member again, loses the invite link; muted,
    // his message is refused (until when, it says); unmuted, it goes; banned, his view ends and
    // the invite link no longer lets him in.
    await member(alice, "Dave").click();
    await alice.getByTestId("member-make-member").click();
    await dave.getByTestId("members").locator('[data-role="MEMBER"]', { hasText: "Dave" }).waitFor({ timeout: LIVE });
    await dave.getByTestId("create-invite").waitFor({ state: "detached", timeout: LIVE });
    await alice.getByTestId("member-card").getByTestId("member-role").filter({ hasText: /^member$/ }).waitFor();
    await done(alice, "MuteMember", () => alice.getByTestId("member-mute").click());
    await notice(alice, "Dave is now a member");
    await say(dave, "Can I still talk?");
    await dave.getByTestId("room-error").filter({ hasText: /You are muted in this room\. \(until .+\)/ }).waitFor({ timeout: LIVE });
    await done(alice, "MuteMember", () => alice.getByTestId("member-unmute").click());
    await say(dave, "Unmuted now");
    await seen(alice, "Unmuted now");
    await alice.getByTestId("member-ban").click();
    await dave.getByTestId("room-ended").waitFor({ timeout: LIVE });
    await notice(alice, "Dave was banned by Alice");
    await dave.goto(link);
    await dave.getByTestId("rooms-error").filter({ hasText: "This invite link does not work" }).waitFor({ timeout: LIVE });
    assert.equal(await listed(dave, "rooms", secret).count(), 0);
    await dave.screenshot({ path: `${ARTIFACTS}/dave-banned.png` });

    // 3. A direct message, started from a member's name, appears in the other person's list
    // without a reload: Alice's page read its room list once, long ago; only myRooms adds it.
    await alice.evaluate(() => (window.__sameDocument = true));
    const aliceListReads = alice.__listReads;
    await bob.goto(`${SERVER}/#/room/${plaza}`); // a PUBLIC room, seen from outside: Join, or the directory
    await bob.getByTestId("room-outside").waitFor({ timeout: LIVE });
    await bob.getByTestId("open-directory").click();
    await bob.getByTestId("directory").locator(`li[data-room="${plaza}"]`).getByTestId("directory-join").click();
    await bob.getByTestId("room-name").filter({ hasText: "plaza" }).waitFor();
    await member(bob, "Alice").click();
    await bob.getByTestId("member-card").filter({ hasText: "Alice" }).getByTestId("member-message").click();
    await bob.getByTestId("room-kind").filter({ hasText: "direct message" }).waitFor({ timeout: LIVE });
    await bob.getByTestId("room-name").filter({ hasText: "Alice" }).waitFor();
    const direct = (await bob.getByTestId("room-id").textContent()).replace("#", "").trim();
    assert.equal(await bob.getByTestId("create-invite").count(), 0); // nobody joins a DIRECT room
    assert.equal(await bob.getByTestId("leave-room").count(), 0);
    const aliceDirect = listed(alice, "directs", direct);
    await aliceDirect.getByTestId("direct-name").filter({ hasText: /^Bob$/ }).waitFor({ timeout: LIVE });
    await say(bob, "Psst, Alice");
    await seen(bob, "Psst, Alice");
    await aliceDirect.getByTestId(`unread-${direct}`).filter({ hasText: /^1$/ }).waitFor({ timeout: LIVE });
    await aliceDirect.getByTestId("preview").filter({ hasText: "Bob: Psst, Alice" }).waitFor({ timeout: LIVE });
    assert.equal(await alice.evaluate(() => window.__sameDocument), true, "Alice's page was not reloaded");
    assert.equal(alice.__listReads, aliceListReads, "Alice's room list was not read again");
    await alice.screenshot({ path: `${ARTIFACTS}/alice-direct-arrived.png` });
    await aliceDirect.getByRole("button").click();
    await seen(alice, "Psst, Alice");
    await alice.getByTestId("room-name").filter({ hasText: "Bob" }).waitFor();
    // Read there: back in another room, the server's count for it (through myRooms) is 0.
    await alice.getByTestId("rooms").getByRole("button", { name: "secret" }).click();
    await alice.getByTestId("room-name").filter({ hasText: "secret" }).waitFor();
    await aliceDirect.getByTestId(`unread-${direct}`).waitFor({ state: "detached", timeout: LIVE });
    await bob.screenshot({ path: `${ARTIFACTS}/bob-direct.png` });

    // The invite's other form, `?invite=<code>`, opened signed in (a full page load): Bob joins
    // the private room and sees its history; the address then names the room alone.
    const code = link.split("#/invite/")[1];
    await bob.goto(`${SERVER}/?invite=${code}`);
    await bob.getByTestId("room-name").filter({ hasText: "secret" }).waitFor({ timeout: LIVE });
    await seen(bob, "Unmuted now");
    await listed(bob, "rooms", secret).waitFor();
    assert.equal(new URL(bob.url()).search, "");
    assert.equal(new URL(bob.url()).hash, `#/room/${secret}`);
  } catch (error) {
    for (const [index, context] of browser.contexts().entries()) {
      for (const [page_index, page] of context.pages().entries()) {
        await page.screenshot({ path: `${ARTIFACTS}/failed-${index}-${page_index}.png`, fullPage: true }).catch(() => {});
      }
    }
    throw error;
  } finally {
    await browser.close();
  }
});
