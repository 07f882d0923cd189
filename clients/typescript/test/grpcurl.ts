// What real grpcurl gets for a prompt: the reference the clients are held to.

import { execFileSync } from "node:child_process";

export const gatewayAddr = process.env.HOROSCOPER_ADDR ?? "127.0.0.1:8080";

/** The whole horoscope grpcurl streams for `prefix`. */
export function grpcurlText(prefix: string): string {
  const output = execFileSync(
    process.env.GRPCURL ?? "grpcurl",
    ["-plaintext", "-d", JSON.stringify({ prefix }), gatewayAddr, "horoscoper.v1.Horoscoper/Infer"],
    { encoding: "utf8" },
  );
  // One pretty-printed JSON object per response.
  const objects = output.split(/\n(?=\{)/).map((chunk) => JSON.parse(chunk) as { text?: string });
  return objects.map((o) => o.text ?? "").join("");
}
