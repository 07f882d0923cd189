//! How a Horoscoper service runs: everything the gateway, the batcher and
//! the worker share beyond the wire (which is `horoscoper-proto`).
//!
//! - [`process`]: a binary's `main` around its service's `run`: runtime,
//!   telemetry, listeners, the drain signal.
//! - [`args`]: the flags every binary shares.
//! - [`serve`]: the one way a service serves its port (its API, health,
//!   reflection, `/metrics`) until its drain settles.
//! - [`drain`]: NOT_SERVING, refuse, finish, cut after a grace period.
//! - [`signal`]: Ctrl-C or SIGTERM.
//! - [`net`]: both ends of a hop, with the same socket and HTTP/2 settings.
//! - [`resolve`]: a name looked up to every address behind it.
//! - [`transport`]: where a service listens and how it dials: TCP, or
//!   [`memory`], the in-memory network of the simulation.
//! - [`coalesce`]: fewer, larger writes on a connection.
//! - [`interrupt`]: a response stream ended early with a status.
//! - [`panic`]: a panic caught where one request's trouble must stay its own.
//! - [`tls`]: TLS on the public port and mutual TLS between the services.
//! - [`telemetry`]: logs and OpenTelemetry traces, set up once per process.
//! - [`log_writer`]: log lines to stderr in batches, from a thread of their own.
//! - [`span_ids`]: trace and span ids for the spans nothing exports.
//! - [`trace`]: a span's place in its trace, across hops.
//! - [`metrics`]: serving a Prometheus registry at `/metrics`.
//! - [`error`]: why a service could not start.
//! - [`use_jemalloc!`]: the allocator a binary chooses in its `main.rs`.

pub mod args;
pub mod coalesce;
pub mod drain;
mod error;
pub mod interrupt;
mod log_writer;
pub mod memory;
pub mod metrics;
pub mod net;
pub mod panic;
pub mod process;
pub mod resolve;
pub mod serve;
pub mod signal;
mod span_ids;
pub mod telemetry;
pub mod tls;
pub mod trace;
pub mod transport;

pub use error::{StartError, chain as error_chain};

#[doc(hidden)]
pub use tikv_jemallocator;

/// Makes jemalloc, with one arena, the allocator of the binary whose
/// `main.rs` says it. One arena: each service's threads mostly allocate
/// from their thread caches, and more arenas held pages of their own (see
/// `docs/performance.md`). `_RJEM_MALLOC_CONF` in the environment still
/// overrides the options.
#[macro_export]
macro_rules! use_jemalloc {
    () => {
        #[global_allocator]
        static ALLOCATOR: $crate::tikv_jemallocator::Jemalloc = $crate::tikv_jemallocator::Jemalloc;

        /// jemalloc's options, read once at start-up (the `malloc_conf`
        /// symbol of its C API, under tikv-jemalloc-sys's prefix).
        #[unsafe(export_name = "_rjem_malloc_conf")]
        static MALLOC_CONF: Option<&'static u8> = Some(&b"narenas:1\0"[0]);
    };
}
