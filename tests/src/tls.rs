//! A TLS front for a plain-TCP test server (vss-server speaks plain HTTP; a self-hosted one is
//! put behind a TLS proxy): a self-signed certificate for 127.0.0.1 made with the `openssl`
//! command, served with rustls, every connection forwarded to the upstream port. Stops when
//! dropped.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::pem::PemObject as _;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::bitcoind::HarnessError;

/// A TLS proxy on 127.0.0.1 in front of `127.0.0.1:<upstream>`.
#[derive(Debug)]
pub struct TlsProxy {
    port: u16,
    certificate: Vec<u8>,
    runtime: Option<tokio::runtime::Runtime>,
}

fn io(what: &str) -> impl FnOnce(std::io::Error) -> HarnessError + '_ {
    move |source| HarnessError::Io { what: what.to_string(), source }
}

/// Makes a self-signed end-entity certificate for 127.0.0.1 (ECDSA P-256) in `dir`: returns
/// (certificate PEM, key PEM).
pub fn self_signed(dir: &Path, name: &str) -> Result<(Vec<u8>, Vec<u8>), HarnessError> {
    let config = dir.join(format!("{name}.cnf"));
    // Not a CA: webpki refuses a CA certificate presented as the server's own.
    std::fs::write(
        &config,
        "[req]\ndistinguished_name = dn\nx509_extensions = ext\nprompt = no\n[dn]\nCN = boltbox test VSS\n\
         [ext]\nbasicConstraints = critical,CA:FALSE\nkeyUsage = critical,digitalSignature\n\
         extendedKeyUsage = serverAuth\nsubjectAltName = IP:127.0.0.1\n",
    )
    .map_err(io("writing the openssl config"))?;
    let (cert, key) = (dir.join(format!("{name}.pem")), dir.join(format!("{name}.key")));
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
        ])
        .arg("-config")
        .arg(&config)
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .map_err(io("running openssl"))?;
    if !out.status.success() {
        return Err(HarnessError::Rpc {
            call: "openssl req".into(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    Ok((
        std::fs::read(&cert).map_err(io("reading the certificate"))?,
        std::fs::read(&key).map_err(io("reading the key"))?,
    ))
}

impl TlsProxy {
    /// Starts the proxy with a new certificate made in `dir`.
    pub fn start(upstream: u16, dir: &Path) -> Result<TlsProxy, HarnessError> {
        let (certificate, key) = self_signed(dir, "proxy")?;
        let bad = |what: &str| HarnessError::Io {
            what: what.to_string(),
            source: std::io::Error::other("bad PEM"),
        };
        let chain = vec![CertificateDer::from_pem_slice(&certificate).map_err(|_| bad("the certificate"))?];
        let key = PrivateKeyDer::from_pem_slice(&key).map_err(|_| bad("the key"))?;
        let config =
            ServerConfig::builder().with_no_client_auth().with_single_cert(chain, key).map_err(|e| {
                HarnessError::Io { what: "the TLS config".into(), source: std::io::Error::other(e) }
            })?;
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .map_err(io("the proxy's runtime"))?;
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind(("127.0.0.1", 0)))
            .map_err(io("binding the proxy"))?;
        let port = listener.local_addr().map_err(io("the proxy's address"))?.port();
        runtime.spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(inbound).await else { return };
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await
                    else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut outbound).await;
                });
            }
        });
        Ok(TlsProxy { port, certificate, runtime: Some(runtime) })
    }

    /// The proxy's port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its certificate (PEM): what a client pins.
    pub fn certificate(&self) -> &[u8] {
        &self.certificate
    }
}

impl Drop for TlsProxy {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}
