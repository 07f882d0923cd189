// The page the gateway serves at `/`: N simulated users, each streaming a
// horoscope over gRPC-Web, and a picture of the batches their requests formed.

import { createGrpcWebTransport } from "@connectrpc/connect-web";
import { ConnectError } from "@connectrpc/connect";
import { createHoroscoperClient, type BatchInfo } from "../src/index.js";

const client = createHoroscoperClient(createGrpcWebTransport({ baseUrl: window.location.origin }));

const PROMPTS = [
  "Will I find love this week?",
  "Should I change jobs?",
  "What do the stars say about money?",
  "Is today a good day to start?",
  "How will my exam go?",
  "Should I call my old friend?",
  "What should I cook tonight?",
  "Will my plants survive the winter?",
  "Is it time to move house?",
  "Will the deploy go well?",
  "Should I learn Rust?",
  "What does my week look like?",
  "Is my cat plotting something?",
  "Will it rain on my picnic?",
  "Should I trust my gut?",
  "What should I read next?",
];

const PALETTE = ["#5b3fd1", "#d1473f", "#1f8a70", "#c27c0e", "#2f6fdb", "#a23fa8", "#4f7d1a", "#d15b8f"];

interface User {
  index: number;
  color: string;
  prompt: HTMLInputElement;
  button: HTMLButtonElement;
  response: HTMLElement;
  served: HTMLElement;
}

interface Batch {
  id: bigint;
  size: number;
  worker: string;
  users: { index: number; queuedMs: number }[];
}

const usersSection = element("users");
const batchesSection = element("batches");
const userCount = element("user-count") as HTMLInputElement;
const batches = new Map<bigint, Batch>();
let users: User[] = [];

function element(id: string): HTMLElement {
  const found = document.getElementById(id);
  if (!found) throw new Error(`#${id} is missing`);
  return found;
}

function randomPrompt(): string {
  return PROMPTS[Math.floor(Math.random() * PROMPTS.length)];
}

function make<K extends keyof HTMLElementTagNameMap>(tag: K, className = "", text = ""): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text) node.textContent = text;
  return node;
}

function renderUsers(count: number): void {
  const previous = users.map((user) => user.prompt.value);
  usersSection.replaceChildren();
  users = [];
  for (let index = 0; index < count; index++) {
    const color = PALETTE[index % PALETTE.length];
    const card = make("article", "user");
    card.style.setProperty("--color", color);
    card.dataset.user = String(index + 1);
    const who = make("div", "who", `User ${index + 1}`);
    const ask = make("div", "ask");
    const prompt = make("input");
    prompt.value = previous[index] ?? randomPrompt();
    prompt.setAttribute("aria-label", `Prompt of user ${index + 1}`);
    prompt.className = "prompt";
    const button = make("button", "secondary", "Ask");
    ask.append(prompt, button);
    const response = make("div", "response", "Press Ask.");
    response.dataset.state = "idle";
    const served = make("div", "served");
    card.append(who, ask, response, served);
    usersSection.append(card);
    const user: User = { index, color, prompt, button, response, served };
    button.addEventListener("click", () => void askFor(user));
    prompt.addEventListener("keydown", (event) => {
      if (event.key === "Enter") void askFor(user);
    });
    users.push(user);
  }
}

async function askFor(user: User): Promise<void> {
  user.button.disabled = true;
  user.response.textContent = "";
  user.response.dataset.state = "streaming";
  user.served.textContent = "queued…";
  try {
    for await (const response of client.infer({ prefix: user.prompt.value })) {
      user.response.textContent += response.text;
      if (response.last && response.batch) served(user, response.batch);
    }
    user.response.dataset.state = "done";
  } catch (error) {
    const message = error instanceof ConnectError ? `${error.code}: ${error.rawMessage}` : String(error);
    user.response.textContent = message;
    user.response.dataset.state = "error";
    user.served.textContent = "";
  } finally {
    user.button.disabled = false;
  }
}

function served(user: User, info: BatchInfo): void {
  const queuedMs = info.queueTime ? Number(info.queueTime.seconds) * 1000 + info.queueTime.nanos / 1e6 : 0;
  user.served.textContent =
    `batch #${info.batchId} · ${info.batchSize} request${info.batchSize === 1 ? "" : "s"} · ` +
    `${info.workerId} · queued ${Math.round(queuedMs)} ms`;
  let batch = batches.get(info.batchId);
  if (!batch) {
    batch = { id: info.batchId, size: info.batchSize, worker: info.workerId, users: [] };
    batches.set(info.batchId, batch);
  }
  batch.users.push({ index: user.index, queuedMs });
  renderBatches();
}

function renderBatches(): void {
  if (batches.size === 0) {
    batchesSection.replaceChildren(make("p", "empty", "No batch yet: ask for a horoscope."));
    return;
  }
  const lanes = new Map<string, Batch[]>();
  for (const batch of [...batches.values()].sort((a, b) => (a.id < b.id ? -1 : 1))) {
    const lane = lanes.get(batch.worker) ?? [];
    lane.push(batch);
    lanes.set(batch.worker, lane);
  }
  const rows = [...lanes.entries()].sort(([a], [b]) => a.localeCompare(b)).map(([worker, lane]) => {
    const row = make("div", "lane");
    row.dataset.worker = worker;
    const blocks = make("div", "blocks");
    for (const batch of lane) {
      const block = make("div", "batch");
      block.dataset.batchId = String(batch.id);
      const longest = Math.max(...batch.users.map((u) => u.queuedMs));
      const chips = make("div", "chips");
      for (const member of [...batch.users].sort((a, b) => a.index - b.index)) {
        const chip = make("span", "chip", `U${member.index + 1}`);
        chip.style.setProperty("--color", PALETTE[member.index % PALETTE.length]);
        chips.append(chip);
      }
      block.append(
        make("div", "title", `batch #${batch.id}`),
        make("div", "meta", `${batch.size} request${batch.size === 1 ? "" : "s"} · queued ≤ ${Math.round(longest)} ms`),
        chips,
      );
      blocks.append(block);
    }
    row.append(make("div", "worker", worker), blocks);
    return row;
  });
  batchesSection.replaceChildren(...rows);
}

element("ask-all").addEventListener("click", () => {
  for (const user of users) void askFor(user);
});
element("new-prompts").addEventListener("click", () => {
  for (const user of users) user.prompt.value = randomPrompt();
});
element("clear-batches").addEventListener("click", () => {
  batches.clear();
  renderBatches();
});
userCount.addEventListener("change", () => {
  const count = Math.min(24, Math.max(1, Number(userCount.value) || 6));
  userCount.value = String(count);
  renderUsers(count);
});

renderUsers(Number(userCount.value));
