#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]
//! TLS is verified by default: both connectors refuse an `https://` server whose certificate no
//! trusted root vouches for (here a self-signed one for `localhost`), before any request is
//! sent. The same server is reached once its certificate is trusted explicitly, so the refusal
//! is the verification and nothing else.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use salesync::core::ports::marketo::MarketoApi;
use salesync::core::ports::salesforce::SalesforceApi;
use salesync::marketo::MarketoClient;
use salesync::salesforce::SalesforceClient;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Self-signed for `localhost` and 127.0.0.1, valid until 2126 (test fixture, not a secret).
const CERT: &str = "-----BEGIN CERTIFICATE-----
MIIBuzCCAWKgAwIBAgIUWr1j7Jnt489wXphKyJzuaJH1EUAwCgYIKoZIzj0EAwIw
FDESMBAGA1UEAwwJbG9jYWxob3N0MCAXDTI2MTEyOTA5MjQ0NFoYDzIxMjYxMTA1
MDkyNDQ0WjAUMRIwEAYDVQQDDAlsb2NhbGhvc3QwWTATBgcqhkjOPQIBBggqhkjO
PQMBBwNCAARoNdu4I2U14Rz8eUip23CbE86wl33FVLUuaGEvFRg/ETrX01KZds04
W0Zq1flwt4VgCwsyr3siK6QnlerHnFTBo4GPMIGMMB0GA1UdDgQWBBTg8FWbyUWt
McobUW9zN9RS1G10QjAfBgNVHSMEGDAWgBTg8FWbyUWtMcobUW9zN9RS1G10QjAa
BgNVHREEEzARgglsb2NhbGhvc3SHBH8AAAEwDAYDVR0TAQH/BAIwADALBgNVHQ8E
BAMCB4AwEwYDVR0lBAwwCgYIKwYBBQUHAwEwCgYIKoZIzj0EAwIDRwAwRAIgRH/p
GIt01P20XHMMjvD5YY2AwGmCxx87KDUyAK5zRmYCIFiMEFIsJB/A1EuAwbX/NrDC
hA9IyRLr1tcgHu5wZ3MF
-----END CERTIFICATE-----
";
const KEY: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg4dTcdJ2lC70g2/0Z
mIPZQpDhZUCTtQiCx6TWqYr+vGehRANCAARoNdu4I2U14Rz8eUip23CbE86wl33F
VLUuaGEvFRg/ETrX01KZds04W0Zq1flwt4VgCwsyr3siK6QnlerHnFTB
-----END PRIVATE KEY-----
";

/// A TLS server on loopback answering every request with a Marketo identity error (enough to
/// show a request got through). Returns its port and the count of completed handshakes.
async fn tls_server() -> (u16, Arc<AtomicUsize>) {
    let cert = CertificateDer::from_pem_slice(CERT.as_bytes()).unwrap();
    let key = PrivateKeyDer::from_pem_slice(KEY.as_bytes()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let handshakes = Arc::new(AtomicUsize::new(0));
    let done = handshakes.clone();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            let (acceptor, done) = (acceptor.clone(), done.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(sock).await else { return };
                done.fetch_add(1, Ordering::SeqCst);
                let mut buf = vec![0u8; 8192];
                let _ = tls.read(&mut buf).await;
                let body = r#"{"error":"invalid_client","error_description":"Bad client credentials"}"#;
                let resp = format!(
                    "HTTP/1.1 401 Unauthorized\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tls.write_all(resp.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    (port, handshakes)
}

/// An error and its whole source chain, as text.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        out.push_str(" / ");
        out.push_str(&s.to_string());
        src = s.source();
    }
    out
}

fn marketo(url: &str) -> salesync::marketo::MarketoClientBuilder {
    MarketoClient::builder()
        .base_url(url)
        .client_id("id")
        .client_secret("s3cret")
        .retry(salesync::marketo::RetryConfig { max_attempts: 1, ..Default::default() })
}

#[tokio::test]
async fn untrusted_certificates_are_refused_by_both_connectors() {
    let (port, handshakes) = tls_server().await;
    let url = format!("https://localhost:{port}");

    let e = marketo(&url).build().unwrap().lead_schema().await.unwrap_err();
    let text = chain(&e);
    assert!(matches!(e, salesync::core::Error::Transport { .. }), "{e:?}");
    assert!(text.to_lowercase().contains("certificate"), "not a certificate failure: {text}");

    let sf = SalesforceClient::builder()
        .login_url(&url)
        .client_id("id")
        .client_secret("s3cret")
        .retry(salesync::salesforce::RetryConfig::none())
        .build()
        .unwrap();
    let e = sf.task_type_values().await.unwrap_err();
    let text = chain(&e);
    assert!(matches!(e, salesync::core::Error::Transport { .. }), "{e:?}");
    assert!(text.to_lowercase().contains("certificate"), "not a certificate failure: {text}");
    assert_eq!(handshakes.load(Ordering::SeqCst), 0, "a handshake completed with an untrusted certificate");

    // Control: trusting the certificate explicitly, the same server answers.
    let trusted = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(CERT.as_bytes()).unwrap())
        .build()
        .unwrap();
    let e = marketo(&url).http_client(trusted).build().unwrap().lead_schema().await.unwrap_err();
    assert!(matches!(e, salesync::core::Error::Unauthenticated { .. }), "{}", chain(&e));
    assert_eq!(handshakes.load(Ordering::SeqCst), 1);
}
