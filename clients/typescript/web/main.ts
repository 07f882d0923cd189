// The page the gateway serves at `/`: N simulated users, each streaming a
// horoscope over gRPC-Web, and the workers on a time axis: the batches their
// requests formed (static batching), or each request's stay on a worker
// (continuous batching), and the queue before them.

import { createGrpcWebTransport } from "@connectrpc/connect-web";
import { ConnectError } from "@connectrpc/connect";
import { Batching, createHoroscoperClient, type BatchInfo } from "../src/index.js";

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

/**
 * A request the page has seen served, on the page's clock (ms). The browser
 * may hold a request back before it sends it (six at once to one origin over
 * HTTP/1.1), so its place on the workers is taken from its first token, not
 * from the click: it joined its worker just before, and waited the queue
 * time the mesh reports before that.
 */
interface Served {
  user: number;
  /** When it entered the queue. */
  queuedAt: number;
  /** When it joined its worker: its first token, less nothing we can know. */
  joinAt: number;
  endAt: number;
  worker: string;
  batchId: bigint;
  batchSize: number;
  maxShared: number;
  continuous: boolean;
  queuedMs: number;
}

const usersSection = element("users");
const timeline = element("timeline");
const modeBadge = element("mode");
const userCount = element("user-count") as HTMLInputElement;
const served: Served[] = [];
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
  let firstAt: number | undefined;
  try {
    for await (const response of client.infer({ prefix: user.prompt.value })) {
      firstAt ??= performance.now();
      user.response.textContent += response.text;
      if (response.last && response.batch) record(user, response.batch, firstAt);
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

function record(user: User, info: BatchInfo, firstAt: number): void {
  const endAt = performance.now();
  const queuedMs = info.queueTime ? Number(info.queueTime.seconds) * 1000 + info.queueTime.nanos / 1e6 : 0;
  const continuous = info.batching === Batching.CONTINUOUS;
  const shared = info.maxShared || info.batchSize;
  const others = shared - 1;
  user.served.textContent = continuous
    ? `${info.workerId} · queued ${Math.round(queuedMs)} ms · ` +
      (others > 0 ? `shared steps with up to ${others} other${others === 1 ? "" : "s"}` : "ran alone")
    : `batch #${info.batchId} · ${info.batchSize} request${info.batchSize === 1 ? "" : "s"} · ` +
      `${info.workerId} · queued ${Math.round(queuedMs)} ms`;
  served.push({
    user: user.index,
    queuedAt: firstAt - queuedMs,
    joinAt: firstAt,
    endAt,
    worker: info.workerId,
    batchId: info.batchId,
    batchSize: info.batchSize,
    maxShared: shared,
    continuous,
    queuedMs,
  });
  showMode(continuous ? "continuous" : "static");
  renderTimeline();
}

/** Says how the mesh batches, as the responses that came back say. */
function showMode(mode: "static" | "continuous"): void {
  modeBadge.dataset.mode = mode;
  modeBadge.textContent = mode === "continuous" ? "--batching continuous" : "--batching static";
}

/**
 * Packs intervals into rows, each in the first row free at its start; with
 * `most` rows, one that finds none free takes the row that frees first.
 * (The page's clock sees a request join a little before the one whose slot
 * it takes has ended: each end reaches the browser after the worker freed
 * the slot.)
 */
function rows<T>(items: T[], start: (item: T) => number, end: (item: T) => number, most = Infinity): Map<T, number> {
  const ends: number[] = [];
  const placed = new Map<T, number>();
  for (const item of [...items].sort((a, b) => start(a) - start(b))) {
    let row = ends.findIndex((free) => free <= start(item));
    if (row < 0 && ends.length >= most) row = ends.indexOf(Math.min(...ends));
    if (row < 0) row = ends.push(0) - 1;
    ends[row] = end(item);
    placed.set(item, row);
  }
  return placed;
}

const ROW_PX = 20;

/**
 * The workers as lanes on one time axis, and the queue above them: in
 * static batching each batch a block from its dispatch to its last token with
 * its requests inside; in continuous batching each request a bar from its
 * join to its last token, in its user's colour, so that a slot freed and
 * taken again shows.
 */
function renderTimeline(): void {
  if (served.length === 0) {
    timeline.replaceChildren(make("p", "empty", "No request served yet: ask for a horoscope."));
    return;
  }
  const t0 = Math.min(...served.map((s) => s.queuedAt));
  const t1 = Math.max(...served.map((s) => s.endAt));
  const span = Math.max(t1 - t0, 1);
  const at = (t: number) => `${(((t - t0) / span) * 100).toFixed(3)}%`;
  const width = (from: number, to: number) => `${((Math.max(to - from, 0) / span) * 100).toFixed(3)}%`;
  const place = (node: HTMLElement, from: number, to: number, row: number) => {
    node.style.left = at(from);
    node.style.width = width(from, to);
    node.style.top = `${row * ROW_PX}px`;
  };
  const lane = (name: string, kind: string, height: number) => {
    const row = make("div", `lane ${kind}`);
    row.dataset.worker = name;
    const track = make("div", "track");
    track.style.height = `${Math.max(height, 1) * ROW_PX}px`;
    row.append(make("div", "worker", name), track);
    return { row, track };
  };

  // The queue: each request from its arrival to its leaving the queue.
  const waits = rows(served, (s) => s.queuedAt, (s) => s.joinAt);
  const queue = lane("queue", "queue", Math.max(...waits.values()) + 1);
  for (const [s, row] of waits) {
    const wait = make("div", "wait");
    wait.dataset.user = String(s.user + 1);
    wait.style.setProperty("--color", PALETTE[s.user % PALETTE.length]);
    wait.title = `User ${s.user + 1} queued ${Math.round(s.queuedMs)} ms`;
    place(wait, s.queuedAt, s.joinAt, row);
    queue.track.append(wait);
  }
  const lanes = [queue.row];

  const workers = [...new Set(served.map((s) => s.worker))].sort((a, b) => a.localeCompare(b));
  for (const worker of workers) {
    const mine = served.filter((s) => s.worker === worker);
    const continuous = mine.filter((s) => s.continuous);
    const batches = new Map<bigint, Served[]>();
    for (const s of mine.filter((s) => !s.continuous)) batches.set(s.batchId, [...(batches.get(s.batchId) ?? []), s]);
    // A static batch: from its dispatch to its last token, its requests inside.
    const blocks = [...batches.entries()].map(([id, members]) => ({
      id,
      members: members.sort((a, b) => a.user - b.user),
      from: Math.min(...members.map((m) => m.joinAt)),
      to: Math.max(...members.map((m) => m.endAt)),
    }));
    const blockRows = rows(blocks, (b) => b.from, (b) => b.to);
    // As many slot rows as requests ever shared a step there.
    const slots = Math.max(1, ...continuous.map((s) => s.maxShared));
    const barRows = rows(continuous, (s) => s.joinAt, (s) => s.endAt, slots);
    let height = 0;
    const blockTop = new Map<(typeof blocks)[number], number>();
    // Blocks that overlap stack; each is as tall as its batch.
    const levels: number[] = [];
    for (const block of [...blocks].sort((a, b) => a.from - b.from)) {
      const level = blockRows.get(block) ?? 0;
      const top = levels.slice(0, level).reduce((sum, h) => sum + h, 0);
      levels[level] = Math.max(levels[level] ?? 0, block.members.length + 1);
      blockTop.set(block, top);
    }
    height = Math.max(levels.reduce((sum, h) => sum + h, 0), barRows.size ? Math.max(...barRows.values()) + 1 : 0);
    const { row, track } = lane(worker, "worker-lane", height);
    for (const block of blocks) {
      const node = make("div", "block");
      node.dataset.batchId = String(block.id);
      place(node, block.from, block.to, blockTop.get(block) ?? 0);
      node.style.height = `${(block.members.length + 1) * ROW_PX - 4}px`;
      node.append(make("div", "title", `batch #${block.id} · ${block.members.length}`));
      for (const [i, m] of block.members.entries()) {
        const bar = make("div", "bar", `U${m.user + 1}`);
        bar.dataset.user = String(m.user + 1);
        bar.style.setProperty("--color", PALETTE[m.user % PALETTE.length]);
        bar.style.left = "0";
        bar.style.width = `${((m.endAt - block.from) / Math.max(block.to - block.from, 1)) * 100}%`;
        bar.style.top = `${(i + 1) * ROW_PX}px`;
        node.append(bar);
      }
      track.append(node);
    }
    for (const [s, slot] of barRows) {
      const bar = make("div", "bar", `U${s.user + 1}`);
      bar.dataset.user = String(s.user + 1);
      bar.dataset.slot = String(slot);
      bar.style.setProperty("--color", PALETTE[s.user % PALETTE.length]);
      bar.title = `User ${s.user + 1}: joined after ${Math.round(s.queuedMs)} ms, shared steps with up to ${s.maxShared} requests`;
      place(bar, s.joinAt, s.endAt, slot);
      track.append(bar);
    }
    lanes.push(row);
  }
  const axis = make("div", "lane axis");
  const ticks = make("div", "track ticks");
  for (let i = 0; i <= 4; i++) {
    const tick = make("span", "tick", `${((span * i) / 4 / 1000).toFixed(1)} s`);
    tick.style.left = `${i * 25}%`;
    ticks.append(tick);
  }
  axis.append(make("div", "worker", ""), ticks);
  timeline.replaceChildren(...lanes, axis);
}

element("ask-all").addEventListener("click", () => {
  for (const user of users) void askFor(user);
});
element("new-prompts").addEventListener("click", () => {
  for (const user of users) user.prompt.value = randomPrompt();
});
element("clear-batches").addEventListener("click", () => {
  served.length = 0;
  renderTimeline();
});
userCount.addEventListener("change", () => {
  const count = Math.min(24, Math.max(1, Number(userCount.value) || 6));
  userCount.value = String(count);
  renderUsers(count);
});

/** Asks the gateway how the mesh batches, to show it before any request. */
async function askMode(): Promise<void> {
  try {
    const response = await fetch("/api/v1/mesh");
    if (!response.ok) return;
    const mesh = (await response.json()) as { batching: string | null };
    // A response that came back meanwhile has said it already.
    if (modeBadge.dataset.mode) return;
    if (mesh.batching === "static" || mesh.batching === "continuous") showMode(mesh.batching);
  } catch {
    // The badge waits for the first response instead.
  }
}

renderUsers(Number(userCount.value));
void askMode();
