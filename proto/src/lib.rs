//! Horoscoper's wire: the public API, the internal mesh protocol, and how
//! what travels in their messages is encoded. A client links this crate
//! alone; what a service needs to run is `horoscoper-runtime`.
//!
//! - [`v1`]: the public API, package `horoscoper.v1` (the gateway serves it).
//! - [`mesh`]: the internal protocol, package `horoscoper.mesh.v1`
//!   (gateway → batcher → workers).
//! - [`codec`]: the protobuf codec of every generated client and server
//!   (small starting buffers).
//! - [`limits`]: how large a message may be on each hop.
//! - [`deadline`]: a client's deadline: the `grpc-timeout` header, and the
//!   time left passed on.
//! - [`reply`]: a request's reply on a session, encoded and decoded.
//! - [`trace_context`]: W3C trace context in metadata and in messages.
//!
//! Code is generated at build time by tonic-prost-build from a descriptor set
//! that protox compiles, so no `protoc` is needed.

pub mod codec;
pub mod deadline;
pub mod limits;
pub mod reply;
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
