//! Optional TLS between services (split topology): a process with a certificate and
//! key serves HTTPS on its one listener, and callers trust the deployment's CA for
//! `https://` peers. rustls with the ring provider, certificates and keys as PEM files;
//! `bazaar dev --split --tls` makes a throwaway CA ([`generate_dev_pki`]).
//!
//! The handshake runs off the accept loop ([`Incoming`]), bounded in time, so a client
//! that opens a connection and stalls cannot hold up everyone else's.

use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_util::either::Either;

pub use rustls::{ClientConfig, ServerConfig};

/// A handshake that has not finished by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at once; past it, new connections wait to be accepted, so
/// clients that connect and never speak cannot take every file descriptor.
const HANDSHAKES_AT_ONCE: usize = 256;

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: no PEM {what} in it, or unreadable")]
    Pem { path: String, what: &'static str },
    #[error("the TLS certificate, key or CA is not usable")]
    Config(#[source] rustls::Error),
    #[error("cannot generate the development certificates")]
    Generate(#[source] rcgen::Error),
    #[error("cannot write {path}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bad = || TlsError::Pem {
        path: path.display().to_string(),
        what: "certificate",
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|_| bad())?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| bad())?;
    if certs.is_empty() {
        return Err(bad());
    }
    Ok(certs)
}

/// The server side: `cert` (PEM, the leaf first, then any intermediates) and `key`
/// (PEM, PKCS#8, SEC1 or PKCS#1).
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let chain = certificates(cert)?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|_| TlsError::Pem {
        path: key.display().to_string(),
        what: "private key",
    })?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(TlsError::Config)?;
    // Every client of a service is bazaar's HTTP/1.1 client.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The client side: trusts the certificates in `ca` (PEM) and nothing else, so a
/// peer's certificate must come from the deployment's CA. Without `ca`, no `https://`
/// peer is trusted (plain `http://` peers are unaffected).
pub fn client_config(ca: Option<&Path>) -> Result<rustls::ClientConfig, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    if let Some(ca) = ca {
        for cert in certificates(ca)? {
            roots.add(cert).map_err(TlsError::Config)?;
        }
    }
    Ok(rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// What a process accepts connections on: plain TCP, or TLS over it.
pub struct Incoming {
    local: SocketAddr,
    inner: Either<TcpListener, mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>>,
}

impl Incoming {
    /// TLS when `tls` is given. The TLS variant accepts on a task of its own, which
    /// ends when this is dropped.
    pub fn new(
        listener: TcpListener,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> std::io::Result<Self> {
        let local = listener.local_addr()?;
        let Some(config) = tls else {
            return Ok(Self {
                local,
                inner: Either::Left(listener),
            });
        };
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        let (done, handshaken) = mpsc::channel(64);
        let slots = Arc::new(tokio::sync::Semaphore::new(HANDSHAKES_AT_ONCE));
        tokio::spawn(async move {
            loop {
                let slot = tokio::select! {
                    slot = Arc::clone(&slots).acquire_owned() => slot,
                    () = done.closed() => return,
                };
                // Never closed, so always a permit.
                let Ok(slot) = slot else { return };
                let accepted = tokio::select! {
                    accepted = listener.accept() => accepted,
                    () = done.closed() => return,
                };
                let (stream, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Out of file descriptors and the like: wait, as axum does.
                        tracing::warn!(error = %e, "accepting a connection failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let (acceptor, done) = (acceptor.clone(), done.clone());
                tokio::spawn(async move {
                    let _slot = slot;
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            // Only fails when the server is stopping.
                            let _ = done.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(Self {
            local,
            inner: Either::Right(handshaken),
        })
    }
}

impl axum::serve::Listener for Incoming {
    type Io = Either<TcpStream, TlsStream<TcpStream>>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match &mut self.inner {
            Either::Left(tcp) => {
                let (stream, peer) = axum::serve::Listener::accept(tcp).await;
                (Either::Left(stream), peer)
            }
            Either::Right(handshaken) => match handshaken.recv().await {
                Some((stream, peer)) => (Either::Right(stream), peer),
                // The accept task only ends once this is dropped.
                None => std::future::pending().await,
            },
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

/// Writes a throwaway CA (`ca.pem`) into `dir` and, for each of `names`, a certificate
/// signed by it (`<name>.crt`) and its key (`<name>.key`, owner-only), valid for
/// `localhost`, `127.0.0.1` and the name itself where it is a DNS name. For
/// development and tests only: the CA's key is not kept, so nothing else can be
/// signed with it.
pub fn generate_dev_pki(dir: &Path, names: &[&str]) -> Result<(), TlsError> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
        KeyUsagePurpose, SanType,
    };
    let write = |name: &str, contents: &str| {
        let path = dir.join(name);
        chassis_core::private_fs::create_dir(dir)
            .and_then(|()| chassis_core::private_fs::create_file(&path))
            .and_then(|mut file| file.write_all(contents.as_bytes()))
            .map_err(|source| TlsError::Write {
                path: path.display().to_string(),
                source,
            })
    };
    let ca_key = KeyPair::generate().map_err(TlsError::Generate)?;
    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(TlsError::Generate)?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "bazaar development CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = ca.self_signed(&ca_key).map_err(TlsError::Generate)?;
    write("ca.pem", &ca.pem())?;
    for name in names {
        let mut hosts = vec!["localhost".to_owned()];
        // `cart+orders` names a process, not a host.
        if name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            hosts.push((*name).to_owned());
        }
        let mut params = CertificateParams::new(hosts).map_err(TlsError::Generate)?;
        params
            .subject_alt_names
            .push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        params.distinguished_name.push(DnType::CommonName, *name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate().map_err(TlsError::Generate)?;
        let cert = params
            .signed_by(&key, &ca, &ca_key)
            .map_err(TlsError::Generate)?;
        write(&format!("{name}.crt"), &cert.pem())?;
        write(&format!("{name}.key"), &key.serialize_pem())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[tokio::test]
    async fn a_client_trusting_the_dev_ca_reaches_a_tls_server_and_others_do_not() {
        let dir = tempfile::tempdir().unwrap();
        generate_dev_pki(dir.path(), &["catalog"]).unwrap();
        let server = server_config(
            &dir.path().join("catalog.crt"),
            &dir.path().join("catalog.key"),
        )
        .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let incoming = Incoming::new(listener, Some(server)).unwrap();
        let port = axum::serve::Listener::local_addr(&incoming).unwrap().port();
        let app = axum::Router::new().route("/", axum::routing::get(|| async { "hello" }));
        tokio::spawn(async move { axum::serve(incoming, app).await });

        let trusting = reqwest::Client::builder()
            .use_preconfigured_tls(client_config(Some(&dir.path().join("ca.pem"))).unwrap())
            .build()
            .unwrap();
        for host in ["localhost", "127.0.0.1"] {
            let body = trusting
                .get(format!("https://{host}:{port}/"))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            assert_eq!(body, "hello");
        }
        // No CA given: the server's certificate is not trusted.
        let untrusting = reqwest::Client::builder()
            .use_preconfigured_tls(client_config(None).unwrap())
            .build()
            .unwrap();
        assert!(
            untrusting
                .get(format!("https://127.0.0.1:{port}/"))
                .send()
                .await
                .is_err()
        );
        // Plain HTTP to a TLS port gets no HTTP answer.
        let plain = reqwest::Client::new();
        assert!(
            plain
                .get(format!("http://127.0.0.1:{port}/"))
                .send()
                .await
                .is_err()
        );
    }

    #[test]
    fn unusable_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("junk.pem"), "not pem").unwrap();
        let junk = dir.path().join("junk.pem");
        let err = server_config(&junk, &junk).unwrap_err().to_string();
        assert!(
            err.contains("junk.pem") && err.contains("certificate"),
            "{err}"
        );
        let err = client_config(Some(&dir.path().join("missing.pem")))
            .unwrap_err()
            .to_string();
        assert!(err.contains("missing.pem"), "{err}");
    }
}
