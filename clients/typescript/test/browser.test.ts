// The web page in a real browser: Debian's chromium, driven headless by
// playwright-core, against the running mesh. Every user's response must fill
// with the horoscope grpcurl gets for that prompt, word by word, and the batch
// picture must name the batches. A screenshot goes to target/browser.png.

import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { test } from "node:test";
import { chromium } from "playwright-core";
import { gatewayAddr, grpcurlText } from "./grpcurl.js";

const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";
const SCREENSHOT = new URL("../../../target/browser.png", import.meta.url).pathname;

test("six users stream their horoscopes and the page shows their batches", async () => {
  const browser = await chromium.launch({
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
  try {
    const page = await browser.newPage({ viewport: { width: 1280, height: 1100 } });
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

    await page.goto(`http://${gatewayAddr}/`);
    const cards = page.locator(".user");
    assert.equal(await cards.count(), 6, "six users by default");
    await page.getByRole("button", { name: "Ask for all users" }).click();
    await page.waitForFunction(
      () => [...document.querySelectorAll(".response")].every((r) => (r as HTMLElement).dataset.state === "done"),
      undefined,
      { timeout: 60_000 },
    );

    const partials = await page.evaluate(() => (window as unknown as { partials: Record<string, string[]> }).partials);
    const batchIds = new Set<string>();
    for (let index = 0; index < 6; index++) {
      const card = cards.nth(index);
      const prompt = await card.locator("input.prompt").inputValue();
      const response = await card.locator(".response").textContent();
      assert.equal(response, grpcurlText(prompt), `user ${index + 1}'s horoscope for ${JSON.stringify(prompt)}`);

      const seen = (partials[String(index + 1)] ?? []).filter((text) => text && text !== response);
      assert.ok(seen.length >= 3, `user ${index + 1}: words arrived one by one (${seen.length} partial texts)`);
      assert.ok(seen.every((text) => response!.startsWith(text)), "every partial text is a prefix of the whole");

      const served = await card.locator(".served").textContent();
      const id = /batch #(\d+)/.exec(served ?? "")?.[1];
      assert.ok(id, `user ${index + 1} says which batch served it: ${served}`);
      batchIds.add(id);
    }

    // The picture names every batch, in its worker's lane, with its users.
    const blocks = page.locator("#batches .batch");
    assert.equal(await blocks.count(), batchIds.size);
    let chips = 0;
    for (const id of batchIds) {
      const block = page.locator(`#batches .batch[data-batch-id="${id}"]`);
      assert.match((await block.locator(".title").textContent()) ?? "", new RegExp(`batch #${id}`));
      chips += await block.locator(".chip").count();
    }
    assert.equal(chips, 6, "each user appears in exactly one batch");
    assert.ok((await page.locator("#batches .lane").count()) >= 1);
    assert.deepEqual(errors, []);

    mkdirSync(new URL("../../../target/", import.meta.url).pathname, { recursive: true });
    await page.screenshot({ path: SCREENSHOT, fullPage: true });
  } finally {
    await browser.close();
  }
});
