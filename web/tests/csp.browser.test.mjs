// The web client under its Content-Security-Policy (tests/test_abuse_addresses.py runs this in
// Debian's Chromium against a real server): two people sign up, chat live over a WebSocket, then
// over Server-Sent Events, with avatars shown; every policy violation the pages report (the DOM's
// `securitypolicyviolation` events and the console's "Content Security Policy" messages) is
// collected, and there must be none. The page must have been served with the policy.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { randomUUID } from "node:crypto";

import { chromium } from "playwright-core";

const SERVER = process.env.CHAT_SERVER_URL;
const ARTIFACTS = process.env.CHAT_ARTIFACTS ?? "test-artifacts/browser-csp";
const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";
const LIVE = 30000;
assert.ok(SERVER, "set CHAT_SERVER_URL");
mkdirSync(ARTIFACTS, { recursive: true });

function listen() {
  window.__violations = [];
  document.addEventListener("securitypolicyviolation", (event) =>
    window.__violations.push(`${event.violatedDirective} blocked ${event.blockedURI}`),
  );
}

async function newPage(browser, violations) {
  const context = await browser.newContext();
  await context.addInitScript(listen);
  const page = await context.newPage();
  page.on("console", (message) => {
    if (/content security policy/i.test(message.text())) violations.push(message.text());
  });
  return page;
}

async function signUp(page, name) {
  const response = await page.goto(SERVER);
  const policy = response.headers()["content-security-policy"] ?? "";
  assert.match(policy, /script-src 'self'/, "the page is served with its policy");
  await page.getByTestId("name").fill(name);
  await page.getByTestId("email").fill(`${name.toLowerCase()}-${randomUUID()}@example.com`);
  await page.getByTestId("password").fill("correct horse battery");
  await page.getByTestId("submit").click();
  await page.getByTestId("me").filter({ hasText: name }).waitFor();
  await page.getByTestId("connection").filter({ hasText: /^connected$/ }).waitFor({ timeout: LIVE });
}

const liveOn = (page, transport) =>
  page.getByTestId("live-transport").filter({ hasText: new RegExp(`^${transport}$`) }).waitFor({ timeout: LIVE });
const seen = (page, body) => page.getByTestId("messages").getByText(body, { exact: true }).waitFor({ timeout: LIVE });

async function say(page, body) {
  await page.getByTestId("draft").fill(body);
  await page.getByTestId("send").click();
}

test("the web client works under its Content-Security-Policy, with no violation", async () => {
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
      "--disable-component-update", "--disable-sync"],
  });
  const violations = [];
  try {
    const alice = await newPage(browser, violations);
    const bob = await newPage(browser, violations);
    await signUp(alice, "Alice");
    await signUp(bob, "Bob");

    await alice.getByTestId("new-room").fill("csp");
    await alice.getByTestId("new-room-kind").selectOption("PUBLIC"); // joined by id below
    await alice.getByTestId("create-room").click();
    await alice.getByTestId("room-name").filter({ hasText: "csp" }).waitFor();
    const room = (await alice.getByTestId("room-id").textContent()).replace("#", "").trim();
    await bob.getByTestId("join-id").fill(room);
    await bob.getByTestId("join-room").click();
    await bob.getByTestId("room-name").filter({ hasText: "csp" }).waitFor();

    // Over the WebSocket (ws:// of the same origin, as connect-src allows).
    await liveOn(alice, "websocket");
    await liveOn(bob, "websocket");
    await new Promise((resolve) => setTimeout(resolve, 500));
    await say(alice, "over a websocket");
    await seen(bob, "over a websocket");
    await say(bob, "and back");
    await seen(alice, "and back");

    // Over Server-Sent Events (the session cookie's POST, then EventSource GETs).
    for (const page of [alice, bob]) {
      await page.getByTestId("transport").selectOption("sse");
      await liveOn(page, "sse");
    }
    await say(alice, "over server-sent events");
    await seen(bob, "over server-sent events");
    await say(bob, "sse back");
    await seen(alice, "sse back");

    // Avatars: each person's picture (an https URL, or ours) or their initials, drawn either way.
    await alice.getByTestId("messages").locator("li", { hasText: "sse back" }).waitFor();
    await alice.screenshot({ path: `${ARTIFACTS}/alice-under-csp.png` });

    for (const page of [alice, bob]) violations.push(...(await page.evaluate(() => window.__violations)));
    assert.deepEqual(violations, []);
  } finally {
    await browser.close();
  }
});
