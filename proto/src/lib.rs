//! Horoscoper's wire: the public API, the internal mesh protocol, and what
//! every service needs where it touches the wire.
//!
//! - [`v1`]: the public API, package `horoscoper.v1` (the gateway serves it).
//! - [`mesh`]: the internal protocol, package `horoscoper.mesh.v1`
//!   (gateway → batcher → workers).
//! - [`codec`]: the protobuf codec of every generated client and server
//!   (small starting buffers).
//! - [`deadline`]: a client's deadline: the `grpc-timeout` header, and the time left passed on.
//! - [`interrupt`]: a response stream ended early with a status (deadline, drain).
//! - [`net`]: both ends of a hop, with the same socket and HTTP/2 settings.
//! - [`coalesce`]: fewer, larger writes on a connection.
//! - [`reply`]: a request's reply on a session, encoded and decoded.
//! - [`serving`]: health and reflection, served beside every API.
//! - [`shutdown`]: the drain signal (Ctrl-C or SIGTERM) and the drain it
//!   starts (NOT_SERVING, refuse, finish, cut after a grace period).
//! - [`tls`]: TLS on the public port and mutual TLS between the services.
//! - [`telemetry`]: logs and OpenTelemetry traces, set up once per process.
//! - [`log_writer`]: log lines to stderr in batches, from a thread of their own.
//! - [`trace_context`]: W3C trace context into and out of metadata and messages.
//! - [`span_ids`]: trace and span ids for the spans nothing exports.
//! - [`metrics`]: serving a Prometheus registry at `/metrics`.
//! - [`process`]: what every service binary does around its `run`.
//! - `allocator`: jemalloc, one arena, for every binary that links this crate.
//!
//! Code is generated at build time by tonic-prost-build from a descriptor set
//! that protox compiles, so no `protoc` is needed.

mod allocator;
pub mod coalesce;
pub mod codec;
pub mod deadline;
pub mod interrupt;
pub mod log_writer;
pub mod metrics;
pub mod net;
pub mod process;
pub mod reply;
pub mod serving;
pub mod shutdown;
pub mod span_ids;
pub mod telemetry;
pub mod tls;
pub mod trace_context;

/// The public API, package `horoscoper.v1`.
pub mod v1 {
    tonic::include_proto!("horoscoper.v1");

    /// Encoded `FileDescriptorSet` of the public API, for server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/horoscoper_v1_descriptor.bin"));

    /// Longest prefix the gateway accepts, in characters.
    pub const MAX_PREFIX_CHARS: usize = 1024;
}

/// The internal mesh protocol, package `horoscoper.mesh.v1`.
pub mod mesh {
    tonic::include_proto!("horoscoper.mesh.v1");

    /// Encoded `FileDescriptorSet` of the mesh protocol, for server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(
        env!("OUT_DIR"),
        "/horoscoper_mesh_v1_descriptor.bin"
    ));
}
