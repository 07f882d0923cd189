//! How large a message may be, on each hop: every server and client in the
//! mesh decodes and encodes within these, and a message is checked against
//! them before it goes onto a stream that other requests share.

/// Largest request the public API decodes: an `InferRequest` (a prefix of
/// at most 1024 characters is at most 4 KiB of UTF-8) with room to spare.
pub const MAX_REQUEST_BYTES: usize = 16 * 1024;
/// Largest token message anyone encodes or decodes (one word and its batch).
pub const MAX_TOKEN_BYTES: usize = 64 * 1024;
/// Largest `GenerateRequest`: a batch of up to 4096 requests, each of at
/// most [`MAX_ITEM_BYTES`].
pub const MAX_BATCH_BYTES: usize = 32 * 1024 * 1024;
/// Largest request, encoded, that travels on a shared stream: a
/// `SubmitRequest` on a gateway's session, and as a `BatchItem` in a batch
/// (a prefix of at most 4 KiB, its ids, its bounded trace context). Checked
/// before it is sent and when it arrives, so that one request that does not
/// fit fails alone rather than breaking the stream it shares.
pub const MAX_ITEM_BYTES: usize = 7 * 1024;
/// The most a `SubmitRequest`'s session id (its tag and a 10-byte varint)
/// and its count of delivered tokens (a tag and a 5-byte varint) take
/// encoded: what a request sized before they are set allows for.
pub const MAX_ID_BYTES: usize = 11 + 6;
/// Largest `GenerateResponse` (one step, a token for each of up to 4096
/// requests) or `SessionResponse` (the replies a session sends at once).
pub const MAX_STEP_BYTES: usize = 4 * 1024 * 1024;
