//! What every service serves beside its own API: the standard health service
//! and server reflection.

use crate::shutdown::Drain;
use tonic::server::NamedService;

use tonic_health::pb::health_server::{Health, HealthServer};
/// Why reflection could not be built.
pub use tonic_reflection::server::Error as ReflectionError;
use tonic_reflection::server::{
    v1::{ServerReflection, ServerReflectionServer},
    v1alpha,
};

/// `grpc.health.v1` for service `S`: SERVING now, NOT_SERVING as soon as
/// `drain` begins.
pub async fn health<S: NamedService>(drain: &Drain) -> HealthServer<impl Health> {
    let (reporter, service) = tonic_health::server::health_reporter();
    reporter.set_serving::<S>().await;
    let begun = drain.begun().clone();
    tokio::spawn(async move {
        begun.cancelled().await;
        reporter.set_not_serving::<S>().await;
    });
    service
}

/// Server reflection (v1) over the given encoded descriptor sets and the
/// health service's.
pub fn reflection(
    descriptor_sets: &[&'static [u8]],
) -> Result<ServerReflectionServer<impl ServerReflection>, ReflectionError> {
    builder(descriptor_sets).build_v1()
}

/// The same in v1alpha, the only version grpcurl 1.8 speaks.
pub fn reflection_v1alpha(
    descriptor_sets: &[&'static [u8]],
) -> Result<v1alpha::ServerReflectionServer<impl v1alpha::ServerReflection>, ReflectionError> {
    builder(descriptor_sets).build_v1alpha()
}

fn builder(descriptor_sets: &[&'static [u8]]) -> tonic_reflection::server::Builder<'static> {
    descriptor_sets.iter().fold(
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET),
        |builder, set| builder.register_encoded_file_descriptor_set(set),
    )
}
