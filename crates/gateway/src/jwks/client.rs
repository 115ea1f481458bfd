//! The HTTP client fetching a set from a URL: over https, rustls verifying the endpoint against
//! the trusted CAs; the answer bounded in size and time.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use http::{Request, StatusCode, Uri, header};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use rustls::{ClientConfig, RootCertStore};

use super::{JwksError, JwksSource, JwksTrust, MAX_JWKS_LEN};

/// The client fetching the set: plain http, or https through rustls.
pub(super) type FetchClient = Client<HttpsConnector<HttpConnector>, Body>;

/// Longest wait for the JWKS endpoint's whole answer.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// The roots of `trust`, read now (a CA file is not read again at refreshes).
fn roots(trust: &JwksTrust) -> Result<RootCertStore, JwksError> {
    let mut roots = RootCertStore::empty();
    match trust {
        JwksTrust::CaFile(path) => {
            let shown = path.display();
            let bad = |why: String| JwksError::CaFile(format!("{shown}: {why}"));
            let pem =
                std::fs::read(path).map_err(|e| bad(format!("cannot read ({})", e.kind())))?;
            for cert in CertificateDer::pem_slice_iter(&pem) {
                let cert = cert.map_err(|e| bad(format!("not valid PEM ({e})")))?;
                roots
                    .add(cert)
                    .map_err(|e| bad(format!("not a usable CA certificate ({e})")))?;
            }
            if roots.is_empty() {
                return Err(bad(
                    "no CA certificate in it (PEM, BEGIN CERTIFICATE)".into()
                ));
            }
        }
        JwksTrust::System => {
            let found = rustls_native_certs::load_native_certs();
            for e in &found.errors {
                tracing::warn!(error = %e, "JWKS: a system CA certificate could not be read");
            }
            let (added, ignored) = roots.add_parsable_certificates(found.certs);
            if ignored > 0 {
                tracing::warn!(
                    ignored,
                    "JWKS: system CA certificates rustls cannot use, ignored"
                );
            }
            if added == 0 {
                return Err(JwksError::Trust(
                    "no CA certificate in the system store to verify https with (install the \
                     ca-certificates package, or set identity.jwks_ca_file)"
                        .into(),
                ));
            }
        }
    }
    Ok(roots)
}

/// The client of `source`: for an `https://` URL, rustls with the ring provider and the roots
/// of `trust`, https only (no fallback to plain http); otherwise plain http, its TLS side
/// trusting nothing (it is never used: the URL does not change and redirects are not followed).
pub(super) fn fetch_client(
    source: &JwksSource,
    trust: &JwksTrust,
) -> Result<FetchClient, JwksError> {
    let https = matches!(source, JwksSource::Url(u) if u.scheme_str() == Some("https"));
    let roots = if https {
        roots(trust)?
    } else {
        RootCertStore::empty()
    };
    // The provider is named here, not taken from the process default: the gateway never runs
    // with another one, whatever else installed one.
    let tls =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| JwksError::Trust(format!("TLS setup: {e}")))?
            .with_root_certificates(roots)
            .with_no_client_auth();
    let connector = HttpsConnectorBuilder::new().with_tls_config(tls);
    let connector = if https {
        connector.https_only()
    } else {
        connector.https_or_http()
    };
    Ok(Client::builder(TokioExecutor::new()).build(connector.enable_http1().build()))
}

/// `e` and its sources (hyper's own text is only "client error (Connect)"; the cause, such as
/// a certificate refused, is further down).
fn causes(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        next = cause.source();
    }
    out
}

/// The body of `uri`'s 200 answer, at most [`MAX_JWKS_LEN`] bytes, within [`FETCH_TIMEOUT`].
pub(super) async fn fetch(client: &FetchClient, uri: &Uri) -> Result<Vec<u8>, JwksError> {
    let failed = |why: String| JwksError::Fetch(format!("{uri}: {why}"));
    let req = Request::get(uri.clone())
        .header(header::ACCEPT, "application/json")
        .body(Body::empty())
        .map_err(|_| failed("not a usable URL".into()))?;
    let work = async {
        let resp = client
            .request(req)
            .await
            .map_err(|e| failed(format!("connection failed ({})", causes(&e))))?;
        if resp.status() != StatusCode::OK {
            return Err(failed(format!("answered {}", resp.status())));
        }
        let body = axum::body::to_bytes(Body::new(resp.into_body()), MAX_JWKS_LEN)
            .await
            .map_err(|_| failed("body unreadable or larger than 1 MiB".into()))?;
        Ok(body.to_vec())
    };
    tokio::time::timeout(FETCH_TIMEOUT, work)
        .await
        .map_err(|_| failed(format!("no answer within {} s", FETCH_TIMEOUT.as_secs())))?
}
