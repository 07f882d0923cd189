//! Logs and traces, set up once per process.
//!
//! - Logs: `tracing` to stderr, filtered by `RUST_LOG` (default `info`),
//!   readable text or JSON lines (`--log-format`), written by a thread of
//!   their own. A log line inside a request carries the request's span
//!   fields, its request id and trace id among them.
//! - Traces: with `OTEL_EXPORTER_OTLP_ENDPOINT` set (and the other standard
//!   `OTEL_*` variables), every span of the services goes to OpenTelemetry
//!   and is exported over OTLP/gRPC, one service name per service: in the
//!   one-process mesh each span goes to the service whose crate made it. An
//!   unreachable collector is logged once, not per span. Without it, spans
//!   get W3C trace and span ids only ([`span_ids`](crate::span_ids)): trace
//!   ids still reach the logs and cross every hop, at no cost of spans that
//!   nobody exports.
//! - Spans that only show a trace's shape (a request's time queued, its
//!   validation, its generation on a worker) have a target under
//!   [`trace_only`](crate::trace_only): they are exported, but not shown in
//!   log lines, and without an exporter nothing builds them.

use crate::{
    args::LogFormat,
    log_writer::{self, LogWriter},
    span_ids::SpanIds,
};
use opentelemetry::{
    Context,
    trace::{SpanBuilder, Tracer, TracerProvider as _},
};
use opentelemetry_sdk::{
    Resource,
    error::OTelSdkResult,
    propagation::TraceContextPropagator,
    trace::{SdkTracer, SdkTracerProvider, SpanData, SpanExporter},
};
use std::{
    fmt,
    io::IsTerminal,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};
use tracing_subscriber::{
    EnvFilter, Layer,
    filter::{FilterExt, LevelFilter, Targets},
    layer::SubscriberExt,
    util::SubscriberInitExt,
};

/// A service whose spans get a service name of their own: the spans made by
/// code under `target` (a crate name) go to `name`.
#[derive(Clone, Copy, Debug)]
pub struct Service {
    pub name: &'static str,
    pub target: &'static str,
}

pub const GATEWAY: Service = Service {
    name: "gateway",
    target: "horoscoper_gateway",
};
pub const BATCHER: Service = Service {
    name: "batcher",
    target: "horoscoper_batcher",
};
pub const WORKER: Service = Service {
    name: "worker",
    target: "horoscoper_worker",
};

/// The target of a service's trace-only spans (see the module doc): its
/// crate name and `::trace_only`, so that they still go to its service.
#[macro_export]
macro_rules! trace_only {
    () => {
        concat!(env!("CARGO_CRATE_NAME"), "::trace_only")
    };
}

/// `targets`, with every service's trace-only spans turned off.
fn without_trace_only(targets: Targets, services: &[Service]) -> Targets {
    services.iter().fold(targets, |targets, service| {
        targets.with_target(format!("{}::trace_only", service.target), LevelFilter::OFF)
    })
}

/// Flushes and stops trace export when dropped, then the log lines still
/// waiting.
#[must_use = "dropping the guard stops trace export and logging"]
pub struct Telemetry {
    providers: Vec<SdkTracerProvider>,
    /// Dropped after the providers (fields drop in order), so that what they
    /// log on shutdown is written too.
    _log_writer: Option<log_writer::Guard>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        for provider in &self.providers {
            let _ = provider.shutdown_with_timeout(Duration::from_secs(2));
        }
    }
}

/// Installs logging and tracing for the process. The first service is the
/// one spans of any other code belong to. Call inside the tokio runtime; a
/// second call (tests start many services in one process) only returns a
/// guard that does nothing.
pub fn init(log_format: LogFormat, services: &[Service]) -> Telemetry {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let endpoint = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT")
        .ok()
        .filter(|e| !e.is_empty());
    // Only the services' own spans become OpenTelemetry spans (or get ids):
    // not those of tonic, hyper or h2, nor the exporter's.
    let traced = services.iter().fold(
        Targets::new().with_target("horoscoper_runtime", tracing::Level::INFO),
        |targets, service| targets.with_target(service.target, tracing::Level::INFO),
    );
    // One layer makes the spans: OpenTelemetry's when exporting, ids only
    // otherwise. (Never an absent layer beside it: an absent layer counts as
    // wanting every span, so a span no filter wants would still be built.)
    let (spans, providers) = match &endpoint {
        Some(endpoint) => {
            let failed = Arc::new(AtomicBool::new(false));
            let providers: Vec<SdkTracerProvider> = services
                .iter()
                .map(|service| provider(service.name, endpoint, &failed))
                .collect();
            let tracer = ServiceTracer {
                routes: services
                    .iter()
                    .zip(&providers)
                    .map(|(service, provider)| (service.target, provider.tracer("horoscoper")))
                    .collect(),
            };
            // A span carries its fields and its service's name (`target`,
            // which routes it), not the layer's optional extras (source
            // location, thread, busy and idle time: memory and clock reads on
            // every request); the services use a span's context explicitly
            // (`crate::trace`), never the thread's current one.
            let otel = tracing_opentelemetry::layer()
                .with_location(false)
                .with_threads(false)
                .with_tracked_inactivity(false)
                .with_context_activation(false)
                .with_tracer(tracer)
                .with_filter(traced)
                .boxed();
            (otel, providers)
        }
        // Nothing exports: spans get ids only, and trace-only spans nothing.
        None => {
            let traced = without_trace_only(traced, services);
            (SpanIds::default().with_filter(traced).boxed(), Vec::new())
        }
    };
    // Log lines show every span but the trace-only ones.
    let logged = without_trace_only(Targets::new().with_default(LevelFilter::TRACE), services);

    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Lines go to stderr from a thread of their own, in batches: a request's
    // access-log line costs the serving thread a format and a copy, not a
    // write(2) of its own. Straight to stderr should no thread be had.
    let (writer, log_writer) = match log_writer::spawn(std::io::stderr()) {
        Ok((writer, guard)) => (writer, Some(guard)),
        Err(_) => (LogWriter::default(), None),
    };
    let fmt = tracing_subscriber::fmt::layer().with_writer(writer);
    let fmt = match log_format {
        LogFormat::Text => fmt.with_ansi(std::io::stderr().is_terminal()).boxed(),
        LogFormat::Json => fmt
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .boxed(),
    };
    let installed = tracing_subscriber::registry()
        .with(spans)
        .with(fmt.with_filter(filter.and(logged)))
        .try_init()
        .is_ok();
    if !installed {
        return Telemetry {
            providers: Vec::new(),
            _log_writer: None,
        };
    }
    if let Some(endpoint) = &endpoint {
        tracing::info!(%endpoint, services = ?services.iter().map(|s| s.name).collect::<Vec<_>>(), "exporting traces over OTLP");
    }
    Telemetry {
        providers,
        _log_writer: log_writer,
    }
}

fn provider(name: &'static str, endpoint: &str, failed: &Arc<AtomicBool>) -> SdkTracerProvider {
    let resource = Resource::builder().with_service_name(name).build();
    let builder = SdkTracerProvider::builder().with_resource(resource);
    match opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .build()
    {
        Ok(exporter) => builder
            .with_batch_exporter(LoggedExporter {
                inner: exporter,
                endpoint: endpoint.to_string(),
                failed: failed.clone(),
            })
            .build(),
        Err(error) => {
            tracing::error!(%error, %endpoint, "cannot set up the OTLP exporter; traces are not exported");
            builder.build()
        }
    }
}

/// Hands each span to the tracer of the service whose crate made it.
#[derive(Clone, Debug)]
struct ServiceTracer {
    routes: Vec<(&'static str, SdkTracer)>,
}

impl Tracer for ServiceTracer {
    type Span = opentelemetry_sdk::trace::Span;

    fn build_with_context(&self, builder: SpanBuilder, parent_cx: &Context) -> Self::Span {
        let target = builder.attributes.as_ref().and_then(|attributes| {
            attributes
                .iter()
                .find(|kv| kv.key.as_str() == "target")
                .map(|kv| kv.value.as_str().into_owned())
        });
        let tracer = target
            .and_then(|target| {
                self.routes
                    .iter()
                    .find(|(crate_name, _)| target.split("::").next() == Some(crate_name))
            })
            .unwrap_or(&self.routes[0]);
        tracer.1.build_with_context(builder, parent_cx)
    }
}

/// The OTLP exporter, saying once that the collector cannot be reached
/// (and once that it can again), rather than once per batch of spans.
struct LoggedExporter<E> {
    inner: E,
    endpoint: String,
    failed: Arc<AtomicBool>,
}

impl<E> fmt::Debug for LoggedExporter<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoggedExporter")
            .field("endpoint", &self.endpoint)
            .finish()
    }
}

impl<E: SpanExporter> SpanExporter for LoggedExporter<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let result = self.inner.export(batch).await;
        match &result {
            Err(error) if !self.failed.swap(true, Ordering::Relaxed) => {
                tracing::warn!(endpoint = %self.endpoint, %error, "cannot export traces; the mesh serves on, and further failures are not logged");
            }
            Ok(()) if self.failed.swap(false, Ordering::Relaxed) => {
                tracing::info!(endpoint = %self.endpoint, "exporting traces again");
            }
            _ => {}
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}
