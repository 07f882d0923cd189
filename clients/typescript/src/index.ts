// Horoscoper's TypeScript client: the messages and the service generated from
// proto/horoscoper/v1 by protobuf-es, and a client over any Connect transport
// (gRPC on Node.js, gRPC-Web in browsers).

import { createClient, type Client, type Transport } from "@connectrpc/connect";
import { Horoscoper } from "./gen/horoscoper/v1/horoscoper_pb.js";

export * from "./gen/horoscoper/v1/horoscoper_pb.js";

/** A client of `horoscoper.v1.Horoscoper`. */
export type HoroscoperClient = Client<typeof Horoscoper>;

/** The client over `transport`. */
export function createHoroscoperClient(transport: Transport): HoroscoperClient {
  return createClient(Horoscoper, transport);
}
