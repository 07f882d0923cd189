//! TLS on the public port and mutual TLS between the services, with a CA
//! made for the test: a client that trusts the CA gets its horoscope over
//! TLS end to end; a plain-text client is refused by the public port; a
//! client of the batcher without a certificate, or with one another CA
//! signed, is refused.

mod common;

use common::{batcher, expected_text, gateway_with, loopback, text, worker};
use horoscoper_proto::{
    mesh::{
        SessionRequest, SubmitRequest, batcher_service_client::BatcherServiceClient,
        session_request::Command,
    },
    v1::{InferRequest, horoscoper_client::HoroscoperClient},
};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use std::path::{Path, PathBuf};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

/// A CA and the certificates it signs, as PEM files in a folder.
struct Pki {
    folder: PathBuf,
    ca: CertifiedIssuer<'static, KeyPair>,
    name: &'static str,
}

impl Pki {
    fn new(folder: &Path, name: &'static str) -> Pki {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, format!("{name} CA"));
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        std::fs::create_dir_all(folder).unwrap();
        std::fs::write(folder.join(format!("{name}-ca.pem")), ca.pem()).unwrap();
        Pki {
            folder: folder.to_path_buf(),
            ca,
            name,
        }
    }

    fn ca_path(&self) -> String {
        self.folder
            .join(format!("{}-ca.pem", self.name))
            .display()
            .to_string()
    }

    /// A certificate for localhost and 127.0.0.1 (server and client use):
    /// the paths of its PEM certificate and key.
    fn leaf(&self, who: &str) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        let cert = params.signed_by(&key, &self.ca).unwrap();
        let cert_path = self.folder.join(format!("{}-{who}.pem", self.name));
        let key_path = self.folder.join(format!("{}-{who}.key", self.name));
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        (
            cert_path.display().to_string(),
            key_path.display().to_string(),
        )
    }

    fn certificate(&self) -> Certificate {
        Certificate::from_pem(self.ca.pem())
    }
}

fn borrow(flags: &[String]) -> Vec<&str> {
    flags.iter().map(String::as_str).collect()
}

fn identity((cert, key): &(String, String)) -> Identity {
    Identity::from_pem(std::fs::read(cert).unwrap(), std::fs::read(key).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_on_the_public_port_and_mutual_tls_between_the_services() {
    let folder = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("tls");
    let pki = Pki::new(&folder, "mesh");
    let rogue = Pki::new(&folder, "rogue");
    let ca = pki.ca_path();
    let mesh_flags = |(cert, key): &(String, String)| {
        vec![
            "--mesh-tls-cert".to_string(),
            cert.clone(),
            "--mesh-tls-key".to_string(),
            key.clone(),
            "--mesh-tls-ca".to_string(),
            ca.clone(),
        ]
    };

    let mut worker_flags = mesh_flags(&pki.leaf("worker"));
    worker_flags.extend(["--min-delay-ms", "0", "--max-delay-ms", "0"].map(String::from));
    let worker = worker(loopback().await, &borrow(&worker_flags)).await;

    let mut batcher_flags = mesh_flags(&pki.leaf("batcher"));
    batcher_flags.extend(["--worker".to_string(), format!("https://{}", worker.addr)]);
    let batcher = batcher(loopback().await, &borrow(&batcher_flags)).await;

    let public = pki.leaf("public");
    let mut gateway_flags = mesh_flags(&pki.leaf("gateway"));
    gateway_flags.extend([
        "--batcher".to_string(),
        format!("https://{}", batcher.addr),
        "--tls-cert".to_string(),
        public.0.clone(),
        "--tls-key".to_string(),
        public.1.clone(),
    ]);
    let gateway = gateway_with(&borrow(&gateway_flags)).await;

    // A client that trusts the CA: TLS to the gateway, mTLS behind it.
    let channel = Channel::from_shared(format!("https://localhost:{}", gateway.addr.port()))
        .unwrap()
        .tls_config(
            ClientTlsConfig::new()
                .ca_certificate(pki.certificate())
                .domain_name("localhost"),
        )
        .unwrap()
        .connect()
        .await
        .expect("a TLS connection to the public port");
    let mut client = HoroscoperClient::new(channel);
    let mut answered = None;
    for _ in 0..50 {
        // The batcher's first connection to the worker may still be on its way.
        match client
            .infer(InferRequest {
                prefix: "over TLS".into(),
            })
            .await
        {
            Ok(response) => match common::collect(response.into_inner()).await {
                Ok(responses) => {
                    answered = Some(text(&responses));
                    break;
                }
                Err(status) => eprintln!("{status:?}"),
            },
            Err(status) => eprintln!("{status:?}"),
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(
        answered.as_deref(),
        Some(expected_text("over TLS").as_str())
    );

    // Plain text to the TLS port: no answer.
    let plain = Channel::from_shared(format!("http://{}", gateway.addr))
        .unwrap()
        .connect()
        .await;
    if let Ok(plain) = plain {
        let status = HoroscoperClient::new(plain)
            .infer(InferRequest {
                prefix: "in the clear".into(),
            })
            .await
            .map(|_| ())
            .unwrap_err();
        eprintln!("plain text: {status:?}");
    }

    // The batcher asks its clients for a certificate the mesh CA signed.
    let submit = |tls: ClientTlsConfig| {
        let url = format!("https://{}", batcher.addr);
        async move {
            let channel = Channel::from_shared(url)
                .unwrap()
                .tls_config(tls)
                .unwrap()
                .connect()
                .await;
            match channel {
                Err(error) => Err(format!("connect: {error:?}")),
                Ok(channel) => BatcherServiceClient::new(channel)
                    .session(tokio_stream::iter([SessionRequest {
                        command: Some(Command::Submit(SubmitRequest {
                            prefix: "who are you".into(),
                            log_id: "t".into(),
                            id: 1,
                            ..SubmitRequest::default()
                        })),
                    }]))
                    .await
                    .map(|_| ())
                    .map_err(|status| format!("{status:?}")),
            }
        }
    };
    let trusting = || {
        ClientTlsConfig::new()
            .ca_certificate(pki.certificate())
            .domain_name("127.0.0.1")
    };
    let anonymous = submit(trusting()).await;
    assert!(
        anonymous.is_err(),
        "a client without a certificate is refused"
    );
    eprintln!("no certificate: {}", anonymous.unwrap_err());
    let stranger = submit(trusting().identity(identity(&rogue.leaf("stranger")))).await;
    assert!(
        stranger.is_err(),
        "a certificate from another CA is refused"
    );
    eprintln!("another CA's certificate: {}", stranger.unwrap_err());
    let member = submit(trusting().identity(identity(&pki.leaf("member")))).await;
    assert!(
        member.is_ok(),
        "the mesh CA's certificate is accepted: {member:?}"
    );
}
