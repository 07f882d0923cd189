//! TLS, off by default: on the public port (the gateway's), and mutual TLS
//! between the services (gateway → batcher → workers), where each service
//! shows its own certificate and accepts only peers whose certificate the
//! mesh's CA signed. rustls (ring) through tonic; certificates and keys are
//! PEM files.

use crate::StartError;
use std::{fs, path::PathBuf};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity, Server, ServerTlsConfig};

/// TLS on the public port.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct PublicTlsArgs {
    /// Serve the public port over TLS with this certificate chain (PEM).
    #[arg(long, env = "HOROSCOPER_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM).
    #[arg(long, env = "HOROSCOPER_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

/// Mutual TLS between the services.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct MeshTlsArgs {
    /// This service's certificate between services (PEM): shown as a server
    /// and as a client. With it, internal URLs must be https://.
    #[arg(long, env = "HOROSCOPER_MESH_TLS_CERT", requires_all = ["mesh_tls_key", "mesh_tls_ca"])]
    pub mesh_tls_cert: Option<PathBuf>,
    /// Its private key (PEM).
    #[arg(long, env = "HOROSCOPER_MESH_TLS_KEY", requires = "mesh_tls_cert")]
    pub mesh_tls_key: Option<PathBuf>,
    /// The CA that signs every service's certificate (PEM): peers without a
    /// certificate it signed are refused.
    #[arg(long, env = "HOROSCOPER_MESH_TLS_CA", requires = "mesh_tls_cert")]
    pub mesh_tls_ca: Option<PathBuf>,
}

/// A service's identity in the mesh and the CA it trusts.
#[derive(Clone, Debug)]
pub struct MeshTls {
    identity: Identity,
    ca: Certificate,
}

fn read(flag: &str, path: &PathBuf) -> Result<Vec<u8>, String> {
    fs::read(path).map_err(|error| format!("cannot read {flag} {}: {error}", path.display()))
}

impl PublicTlsArgs {
    /// The public port's TLS, if asked for; the files are read and checked.
    pub fn load(&self) -> Result<Option<ServerTlsConfig>, StartError> {
        self.read().map_err(StartError::Tls)
    }

    fn read(&self) -> Result<Option<ServerTlsConfig>, String> {
        let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) else {
            return Ok(None);
        };
        let identity = Identity::from_pem(read("--tls-cert", cert)?, read("--tls-key", key)?);
        let config = ServerTlsConfig::new().identity(identity);
        check_server(&config, "--tls-cert/--tls-key")?;
        Ok(Some(config))
    }
}

impl MeshTlsArgs {
    /// Mutual TLS between the services, if asked for; the files are read
    /// and checked.
    pub fn load(&self) -> Result<Option<MeshTls>, StartError> {
        self.read().map_err(StartError::Tls)
    }

    fn read(&self) -> Result<Option<MeshTls>, String> {
        let (Some(cert), Some(key), Some(ca)) =
            (&self.mesh_tls_cert, &self.mesh_tls_key, &self.mesh_tls_ca)
        else {
            return Ok(None);
        };
        let tls = MeshTls {
            identity: Identity::from_pem(
                read("--mesh-tls-cert", cert)?,
                read("--mesh-tls-key", key)?,
            ),
            ca: Certificate::from_pem(read("--mesh-tls-ca", ca)?),
        };
        check_server(&tls.server(), "--mesh-tls-*")?;
        Endpoint::from_static("https://localhost")
            .tls_config(tls.client("localhost"))
            .map_err(|error| format!("--mesh-tls-*: {}", crate::error::chain(&error)))?;
        Ok(Some(tls))
    }
}

fn check_server(config: &ServerTlsConfig, flags: &str) -> Result<(), String> {
    Server::builder()
        .tls_config(config.clone())
        .map(|_| ())
        .map_err(|error| format!("{flags}: {}", crate::error::chain(&error)))
}

impl MeshTls {
    /// A server that shows this service's certificate and requires one the
    /// CA signed from every client.
    pub fn server(&self) -> ServerTlsConfig {
        ServerTlsConfig::new()
            .identity(self.identity.clone())
            .client_ca_root(self.ca.clone())
    }

    /// A client that shows this service's certificate and accepts a server
    /// whose certificate the CA signed for `domain`.
    pub fn client(&self, domain: &str) -> ClientTlsConfig {
        ClientTlsConfig::new()
            .ca_certificate(self.ca.clone())
            .identity(self.identity.clone())
            .domain_name(domain)
    }
}
