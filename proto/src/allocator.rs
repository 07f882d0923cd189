//! The memory allocator of every binary that links this crate (the
//! services, the launcher, the tests and the bench with its reference):
//! jemalloc, with one arena.
//!
//! Measured by `just bench` against glibc's malloc, which took 15 % of the
//! gateway's CPU at zero delay, some of it waiting on arena locks: 13 % less
//! CPU per request through the mesh (18 % less for the bench's single-hop
//! reference, which links it too), and at 10,000 open streams 17.6 KB per
//! stream instead of 22.5. One arena rather than four per core: each
//! service runs two tokio threads that mostly allocate from their thread
//! caches, and the extra arenas held pages of their own, some 3 KB per open
//! stream.

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read once at start-up (the `malloc_conf` symbol of
/// its C API, under the prefix tikv-jemalloc-sys gives its symbols).
/// `_RJEM_MALLOC_CONF` in the environment still overrides them.
#[unsafe(export_name = "_rjem_malloc_conf")]
static MALLOC_CONF: Option<&'static u8> = Some(&b"narenas:1\0"[0]);
