// The client on Node.js, over gRPC (HTTP/2).

import { createGrpcTransport } from "@connectrpc/connect-node";
import { createHoroscoperClient, type HoroscoperClient } from "./index.js";

/** A client of the gateway at `baseUrl`, e.g. `http://127.0.0.1:8080`. */
export function connect(baseUrl: string): HoroscoperClient {
  return createHoroscoperClient(createGrpcTransport({ baseUrl }));
}
