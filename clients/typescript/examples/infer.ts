// Streams a horoscope from a running mesh, word by word:
//   npx tsx examples/infer.ts [PROMPT] [GATEWAY_URL]

import { connect } from "../src/node.js";

const prompt = process.argv[2] ?? "What does my week look like?";
const gateway = process.argv[3] ?? "http://127.0.0.1:8080";

const client = connect(gateway);
for await (const response of client.infer({ prefix: prompt })) {
  process.stdout.write(response.text);
  if (response.last && response.batch) {
    const { batchId, batchSize, workerId } = response.batch;
    process.stdout.write(`\n(batch ${batchId} of ${batchSize} on ${workerId})\n`);
  }
}
