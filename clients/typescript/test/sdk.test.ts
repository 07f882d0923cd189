// The generated TypeScript client against the running mesh, held to grpcurl.

import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { test } from "node:test";
import { connect } from "../src/node.js";
import { gatewayAddr, grpcurlText } from "./grpcurl.js";

test("streams the same horoscope grpcurl gets, token by token", async () => {
  const client = connect(`http://${gatewayAddr}`);
  const prompt = "Will the TypeScript client see the stars?";
  const tokens: string[] = [];
  let batch;
  for await (const response of client.infer({ prefix: prompt })) {
    tokens.push(response.text);
    if (response.last) batch = response.batch;
  }
  assert.equal(tokens.join(""), grpcurlText(prompt));
  assert.ok(tokens.length > 20, `one token per word, got ${tokens.length}`);
  assert.ok(tokens.slice(0, -1).every((t) => t.endsWith(" ")));
  assert.ok(batch && batch.batchSize >= 1 && batch.workerId.length > 0);
});

test("a prefix over 1024 characters is refused with INVALID_ARGUMENT", async () => {
  const client = connect(`http://${gatewayAddr}`);
  await assert.rejects(
    async () => {
      for await (const _ of client.infer({ prefix: "x".repeat(1025) })) {
        // nothing arrives
      }
    },
    (error: Error & { code?: number; rawMessage?: string }) => {
      assert.equal(error.code, 3); // Code.InvalidArgument
      assert.match(error.rawMessage ?? "", /at most 1024 are allowed/);
      return true;
    },
  );
});

test("the example runs", () => {
  const output = execFileSync("npx", ["tsx", "examples/infer.ts", "hello", `http://${gatewayAddr}`], {
    encoding: "utf8",
    cwd: new URL("..", import.meta.url).pathname,
  });
  assert.ok(output.startsWith(`${grpcurlText("hello")}\n(batch `), output);
});
