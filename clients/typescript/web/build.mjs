// Builds the web page into gateway/assets/, which the gateway binary embeds:
// `npm run build`. The output is committed; CI rebuilds it and checks that
// nothing changed.

import { build } from "esbuild";
import { copyFile, mkdir } from "node:fs/promises";

const here = new URL(".", import.meta.url);
const assets = new URL("../../../gateway/assets/", import.meta.url);
await mkdir(assets, { recursive: true });
await build({
  entryPoints: [new URL("main.ts", here).pathname],
  outfile: new URL("app.js", assets).pathname,
  bundle: true,
  format: "iife",
  target: "es2022",
  minify: true,
  legalComments: "none",
  logLevel: "warning",
});
await copyFile(new URL("index.html", here), new URL("index.html", assets));
