// The web page in a real browser: Debian's chromium, driven headless by
// playwright-core, against the running meshes, one in each batching mode.
// Every user's response must fill with the horoscope grpcurl gets for that
// prompt, word by word, and the timeline must show the batches (static) or
// each request's stay on its worker (continuous). Screenshots go to
// target/browser.png and target/browser-continuous.png.

import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { test } from "node:test";
import { type Browser, type Page, chromium } from "playwright-core";
import { gatewayAddr, grpcurlText } from "./grpcurl.js";

const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";
const TARGET = new URL("../../../target/", import.meta.url).pathname;
/** A second mesh, run with `--batching continuous`. */
const continuousAddr = process.env.HOROSCOPER_CONTINUOUS_ADDR;

async function launch() {
  return chromium.launch({
    executablePath: CHROMIUM,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
}

/**
 * Opens the page of the mesh at `addr`, asks for `count` users at once,
 * and checks that each response fills, word by word, with what grpcurl gets.
 * Returns the page, and each user's `.served` line.
 */
async function askAll(
  browser: Browser,
  addr: string,
  count: number,
): Promise<{ page: Page; served: string[]; errors: string[]; modeBefore: string | null }> {
  const page = await browser.newPage({ viewport: { width: 1280, height: 1200 } });
  const errors: string[] = [];
  page.on("pageerror", (error) => errors.push(String(error)));

  // Record every distinct text each response area shows while it streams.
  await page.addInitScript(() => {
    const seen: Record<string, string[]> = {};
    (window as unknown as { partials: typeof seen }).partials = seen;
    new MutationObserver(() => {
      document.querySelectorAll<HTMLElement>(".user").forEach((card) => {
        const response = card.querySelector<HTMLElement>(".response");
        if (response?.dataset.state !== "streaming") return;
        const text = response.textContent ?? "";
        const list = (seen[card.dataset.user ?? "?"] ??= []);
        if (list[list.length - 1] !== text) list.push(text);
      });
    }).observe(document, { subtree: true, childList: true, characterData: true });
  });

  await page.goto(`http://${addr}/`);
  // The page asks the gateway how the mesh batches before anyone asks.
  await page.waitForFunction(() => Boolean(document.getElementById("mode")?.dataset.mode), undefined, {
    timeout: 10_000,
  });
  const modeBefore = await page.locator("#mode").getAttribute("data-mode");
  const cards = page.locator(".user");
  assert.equal(await cards.count(), 6, "six users by default");
  if (count !== 6) {
    await page.locator("#user-count").fill(String(count));
    await page.locator("#user-count").dispatchEvent("change");
    assert.equal(await cards.count(), count);
  }
  await page.getByRole("button", { name: "Ask for all users" }).click();
  await allDone(page);

  const partials = await page.evaluate(() => (window as unknown as { partials: Record<string, string[]> }).partials);
  const served: string[] = [];
  for (let index = 0; index < count; index++) {
    const card = cards.nth(index);
    const prompt = await card.locator("input.prompt").inputValue();
    const response = await card.locator(".response").textContent();
    assert.equal(response, grpcurlText(prompt), `user ${index + 1}'s horoscope for ${JSON.stringify(prompt)}`);

    const seen = (partials[String(index + 1)] ?? []).filter((text) => text && text !== response);
    assert.ok(seen.length >= 3, `user ${index + 1}: words arrived one by one (${seen.length} partial texts)`);
    assert.ok(seen.every((text) => response!.startsWith(text)), "every partial text is a prefix of the whole");
    served.push((await card.locator(".served").textContent()) ?? "");
  }
  return { page, served, errors, modeBefore };
}

async function allDone(page: Page): Promise<void> {
  await page.waitForFunction(
    () => [...document.querySelectorAll(".response")].every((r) => (r as HTMLElement).dataset.state === "done"),
    undefined,
    { timeout: 60_000 },
  );
}

async function screenshot(page: Page, name: string): Promise<void> {
  mkdirSync(TARGET, { recursive: true });
  await page.screenshot({ path: `${TARGET}${name}`, fullPage: true });
}

test("static batching: six users stream their horoscopes and each batch is a block on its worker's lane", async () => {
  const browser = await launch();
  try {
    const { page, served, errors, modeBefore } = await askAll(browser, gatewayAddr, 6);
    assert.equal(modeBefore, "static", "the mode shows before any request");
    assert.equal(await page.locator("#mode").getAttribute("data-mode"), "static");
    const batchIds = new Set<string>();
    for (const [index, line] of served.entries()) {
      const id = /batch #(\d+)/.exec(line)?.[1];
      assert.ok(id, `user ${index + 1} says which batch served it: ${line}`);
      batchIds.add(id);
    }
    // Every batch is one block, on a worker's lane, holding its users' bars.
    const blocks = page.locator("#timeline .worker-lane .block");
    assert.equal(await blocks.count(), batchIds.size);
    let bars = 0;
    for (const id of batchIds) {
      const block = page.locator(`#timeline .block[data-batch-id="${id}"]`);
      assert.match((await block.locator(".title").textContent()) ?? "", new RegExp(`batch #${id}`));
      bars += await block.locator(".bar").count();
    }
    assert.equal(bars, 6, "each user's request is inside exactly one batch");
    assert.equal(await page.locator("#timeline .queue .wait").count(), 6, "each request's wait in the queue");
    assert.deepEqual(errors, []);
    await screenshot(page, "browser.png");
  } finally {
    await browser.close();
  }
});

test("continuous batching: each request is a bar on its worker's lane, and a freed slot is taken again", { skip: !continuousAddr && "HOROSCOPER_CONTINUOUS_ADDR is not set" }, async () => {
  const browser = await launch();
  try {
    // Six users on 2 workers × 2 slots (that mesh runs --batch-size 2): two
    // wait for a slot to free.
    const { page, served, errors, modeBefore } = await askAll(browser, continuousAddr!, 6);
    assert.equal(modeBefore, "continuous", "the mode shows before any request");
    assert.equal(await page.locator("#mode").getAttribute("data-mode"), "continuous");
    for (const line of served) assert.match(line, /worker-\d+ · queued \d+ ms/);
    assert.equal(await page.locator("#timeline .block").count(), 0, "no batch blocks");
    assert.equal(await page.locator("#timeline .worker-lane .bar").count(), 6);
    const slots = await page.locator("#timeline .worker-lane").evaluateAll((lanes) =>
      lanes.map((lane) => [...lane.querySelectorAll<HTMLElement>(".bar")].map((bar) => bar.dataset.slot)),
    );
    for (const lane of slots) assert.ok(new Set(lane).size <= 2, `at most 2 slots a worker: ${JSON.stringify(slots)}`);
    assert.ok(
      served.some((line) => !/queued 0 ms/.test(line)),
      `some request waited for a slot: ${JSON.stringify(served)}`,
    );
    assert.ok(
      slots.some((lane) => new Set(lane).size < lane.length),
      `a slot row holds two requests, one after the other: ${JSON.stringify(slots)}`,
    );
    assert.deepEqual(errors, []);
    await screenshot(page, "browser-continuous.png");
  } finally {
    await browser.close();
  }
});
