//! Bearer tokens verified against a JWKS: fixed test keys (`tests/keys/`), a JWKS served by a
//! tiny HTTP server of the test's own that counts its fetches, rotation, forged kids, and every
//! token the gateway must refuse. Over https the server presents a certificate from
//! `tests/fixtures/` (one signed by the test CA, or a rogue self-signed one).

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use gateway::{ClaimChecks, JwksError, JwksSource, JwksTrust, JwksVerifier};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::harness::{App, Gateway, client, problem_code};

fn key_file(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/keys")
        .join(name)
}

fn jwk(kid: &str) -> Value {
    serde_json::from_slice(&std::fs::read(key_file(&format!("{kid}.jwk.json"))).unwrap()).unwrap()
}

fn jwks(kids: &[&str]) -> String {
    json!({"keys": kids.iter().map(|k| jwk(k)).collect::<Vec<_>>()}).to_string()
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A token signed with the private key `kid` (the kid also goes in the header).
fn sign(kid: &str, alg: Algorithm, claims: &Value) -> String {
    let der = std::fs::read(key_file(&format!("{kid}.der"))).unwrap();
    let key = if kid.starts_with("ec") {
        EncodingKey::from_ec_der(&der)
    } else {
        EncodingKey::from_rsa_der(&der)
    };
    let mut header = Header::new(alg);
    header.kid = Some(kid.into());
    encode(&header, claims, &key).unwrap()
}

fn claims(sub: &str) -> Value {
    json!({"sub": sub, "exp": now() + 600})
}

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// A TLS server side presenting `tests/fixtures/{name}.pem` (`server`: signed by the test CA;
/// `rogue`: self-signed).
fn acceptor(name: &str) -> TlsAcceptor {
    let cert = CertificateDer::from_pem_file(fixture(&format!("{name}.pem"))).unwrap();
    let key = PrivateKeyDer::from_pem_file(fixture(&format!("{name}.key"))).unwrap();
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .unwrap();
    TlsAcceptor::from(Arc::new(config))
}

/// Serves a JWKS over plain HTTP, or over https with a certificate that can be swapped: `GET`
/// answers the current document (or 500 while `failing`), counting every request (a refused
/// TLS handshake is a connection, not a request).
#[derive(Clone)]
struct JwksServer {
    doc: Arc<Mutex<String>>,
    failing: Arc<Mutex<bool>>,
    fetches: Arc<AtomicU64>,
    connections: Arc<AtomicU64>,
    tls: Arc<Mutex<Option<TlsAcceptor>>>,
    ip: String,
    port: Arc<AtomicU16>,
}

impl JwksServer {
    async fn start(doc: String) -> JwksServer {
        JwksServer::start_on("127.0.0.1", None, doc).await
    }

    /// Over https on `ip`, presenting the fixture certificate `cert`.
    async fn start_tls(ip: &str, cert: &str, doc: String) -> JwksServer {
        JwksServer::start_on(ip, Some(acceptor(cert)), doc).await
    }

    async fn start_on(ip: &str, tls: Option<TlsAcceptor>, doc: String) -> JwksServer {
        let listener = tokio::net::TcpListener::bind((ip, 0)).await.unwrap();
        let server = JwksServer {
            doc: Arc::new(Mutex::new(doc)),
            failing: Arc::new(Mutex::new(false)),
            fetches: Arc::new(AtomicU64::new(0)),
            connections: Arc::new(AtomicU64::new(0)),
            tls: Arc::new(Mutex::new(tls)),
            ip: ip.into(),
            port: Arc::new(AtomicU16::new(listener.local_addr().unwrap().port())),
        };
        let s = server.clone();
        tokio::spawn(async move {
            loop {
                let Ok((conn, _)) = listener.accept().await else {
                    return;
                };
                s.connections.fetch_add(1, Ordering::SeqCst);
                let s = s.clone();
                let tls = s.tls.lock().unwrap().clone();
                tokio::spawn(async move {
                    match tls {
                        None => s.answer(conn).await,
                        Some(tls) => {
                            if let Ok(conn) = tls.accept(conn).await {
                                s.answer(conn).await;
                            }
                        }
                    }
                });
            }
        });
        server
    }

    async fn answer<S: AsyncRead + AsyncWrite + Unpin>(&self, mut conn: S) {
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match conn.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
        self.fetches.fetch_add(1, Ordering::SeqCst);
        let (status, body) = if *self.failing.lock().unwrap() {
            ("500 Internal Server Error", "down".to_string())
        } else {
            ("200 OK", self.doc.lock().unwrap().clone())
        };
        let resp = format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\n\
             content-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = conn.write_all(resp.as_bytes()).await;
        let _ = conn.shutdown().await;
    }

    /// The set's URL, with `host` (the address, or a name resolving to it) in it.
    fn url_as(&self, host: &str) -> String {
        let scheme = if self.tls.lock().unwrap().is_some() {
            "https"
        } else {
            "http"
        };
        format!(
            "{scheme}://{host}:{}/.well-known/jwks.json",
            self.port.load(Ordering::SeqCst)
        )
    }

    fn url(&self) -> String {
        self.url_as(&self.ip)
    }

    /// From now on, TLS handshakes present the fixture certificate `cert`.
    fn present(&self, cert: &str) {
        *self.tls.lock().unwrap() = Some(acceptor(cert));
    }

    fn connections(&self) -> u64 {
        self.connections.load(Ordering::SeqCst)
    }

    fn set(&self, doc: String) {
        *self.doc.lock().unwrap() = doc;
    }

    fn fail(&self, failing: bool) {
        *self.failing.lock().unwrap() = failing;
    }

    fn fetches(&self) -> u64 {
        self.fetches.load(Ordering::SeqCst)
    }
}

fn bearer(token: &str) -> http::Request<()> {
    http::Request::builder()
        .header("authorization", format!("Bearer {token}"))
        .body(())
        .unwrap()
}

fn b64(v: &Value) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
}

#[tokio::test]
async fn jwks_tokens_verify_with_the_pinned_algorithm_only() {
    let dir = std::env::temp_dir().join(testkit::unique_prefix("jwks"));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("jwks.json");
    std::fs::write(&file, jwks(&["rsa-a", "ec-a"])).unwrap();
    let checks = ClaimChecks {
        issuer: Some("https://idp.example".into()),
        audience: Some("my-app".into()),
    };
    let v = JwksVerifier::start(JwksSource::File(file), checks, Duration::from_secs(300))
        .await
        .unwrap();
    assert_eq!(v.key_count(), 2);
    let good = |sub: &str| json!({"sub": sub, "exp": now() + 600, "iss": "https://idp.example", "aud": "my-app"});
    let rs = sign("rsa-a", Algorithm::RS256, &good("alice"));
    assert_eq!(v.verify(&rs).as_deref(), Some("alice"));
    let es = sign("ec-a", Algorithm::ES256, &good("bob"));
    assert_eq!(v.verify(&es).as_deref(), Some("bob"));
    // Another RSA algorithm than the one pinned for the key.
    let rs512 = sign("rsa-a", Algorithm::RS512, &good("alice"));
    assert_eq!(v.verify(&rs512), None, "RS512 against an RS256 key");
    // Algorithm confusion: the RSA public key used as an HMAC secret.
    let public = std::fs::read(key_file("rsa-a.jwk.json")).unwrap();
    let mut h = Header::new(Algorithm::HS256);
    h.kid = Some("rsa-a".into());
    let hs = encode(
        &h,
        &good("mallory"),
        &EncodingKey::from_secret(&public).unwrap(),
    )
    .unwrap();
    assert_eq!(v.verify(&hs), None, "HS256 against a JWKS");
    // A token claiming the EC key's kid, signed with the RSA key.
    let mut wrong = sign("rsa-a", Algorithm::RS256, &good("mallory"));
    let header = b64(&json!({"alg": "RS256", "typ": "JWT", "kid": "ec-a"}));
    wrong = format!("{header}.{}", wrong.split_once('.').unwrap().1);
    assert_eq!(v.verify(&wrong), None, "RS256 under an EC key's kid");
    // `none`.
    let none = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "kid": "rsa-a"})),
        b64(&good("mallory"))
    );
    assert_eq!(v.verify(&none), None, "alg none");
    // Time and claims.
    let mut c = good("alice");
    c["exp"] = json!(now() - 3600);
    assert_eq!(
        v.verify(&sign("rsa-a", Algorithm::RS256, &c)),
        None,
        "expired"
    );
    let mut c = good("alice");
    c["nbf"] = json!(now() + 3600);
    assert_eq!(v.verify(&sign("rsa-a", Algorithm::RS256, &c)), None, "nbf");
    let mut c = good("alice");
    c.as_object_mut().unwrap().remove("sub");
    assert_eq!(
        v.verify(&sign("rsa-a", Algorithm::RS256, &c)),
        None,
        "no sub"
    );
    let mut c = good("alice");
    c.as_object_mut().unwrap().remove("exp");
    assert_eq!(
        v.verify(&sign("rsa-a", Algorithm::RS256, &c)),
        None,
        "no exp"
    );
    let mut c = good("alice");
    c["iss"] = json!("https://other.example");
    assert_eq!(
        v.verify(&sign("rsa-a", Algorithm::RS256, &c)),
        None,
        "issuer"
    );
    let mut c = good("alice");
    c["aud"] = json!("another-app");
    assert_eq!(
        v.verify(&sign("rsa-a", Algorithm::RS256, &c)),
        None,
        "audience"
    );
    let mut c = good("alice");
    c["pad"] = json!("x".repeat(9000));
    assert_eq!(
        v.verify(&sign("rsa-a", Algorithm::RS256, &c)),
        None,
        "oversized"
    );
    let c = good("a b");
    assert_eq!(
        v.verify(&sign("rsa-a", Algorithm::RS256, &c)),
        None,
        "space in sub"
    );
    // Signed by a key the set does not have, under a kid it does.
    let mut other = sign("rsa-b", Algorithm::RS256, &good("mallory"));
    let header = b64(&json!({"alg": "RS256", "typ": "JWT", "kid": "rsa-a"}));
    other = format!("{header}.{}", other.split_once('.').unwrap().1);
    assert_eq!(v.verify(&other), None, "foreign signature");
    assert_eq!(v.verify("garbage"), None);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_rotated_key_is_refetched_once_and_forged_kids_do_not_hammer_the_endpoint() {
    let server = JwksServer::start(jwks(&["rsa-a"])).await;
    let source = JwksSource::Url(server.url().parse().unwrap());
    let v = JwksVerifier::start(source, ClaimChecks::default(), Duration::from_secs(300))
        .await
        .unwrap();
    assert_eq!(server.fetches(), 1, "fetched at start");
    // The provider rotates to rsa-b: the first token with the new kid makes one refetch.
    server.set(jwks(&["rsa-b", "ec-a"]));
    let token = sign("rsa-b", Algorithm::RS256, &claims("carol"));
    v.prepare(&bearer(&token)).await;
    assert_eq!(server.fetches(), 2);
    assert_eq!(v.verify(&token).as_deref(), Some("carol"));
    // The old key is gone with the rotation.
    let old = sign("rsa-a", Algorithm::RS256, &claims("carol"));
    assert_eq!(v.verify(&old), None);
    // A flood of made-up kids, many at once: no further fetch within the bound.
    let mut tasks = Vec::new();
    for i in 0..200 {
        let v = v.clone();
        let forged = sign("rsa-a", Algorithm::RS256, &claims("mallory"));
        let header = b64(&json!({"alg": "RS256", "kid": format!("forged-{i}")}));
        let forged = format!("{header}.{}", forged.split_once('.').unwrap().1);
        tasks.push(tokio::spawn(async move {
            v.prepare(&bearer(&forged)).await;
            v.verify(&forged)
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), None);
    }
    assert_eq!(
        server.fetches(),
        2,
        "at most one refetch per {:?}",
        gateway::UNKNOWN_KID_REFETCH
    );
    // Known kids never refetch.
    v.prepare(&bearer(&token)).await;
    assert_eq!(server.fetches(), 2);
}

#[tokio::test]
async fn a_failed_refresh_keeps_the_last_good_set_and_a_later_one_takes_the_new() {
    let server = JwksServer::start(jwks(&["ec-a"])).await;
    let source = JwksSource::Url(server.url().parse().unwrap());
    let v = JwksVerifier::start(source, ClaimChecks::default(), Duration::from_secs(1))
        .await
        .unwrap();
    let token = sign("ec-a", Algorithm::ES256, &claims("dave"));
    server.fail(true);
    let wait_fetches = |n: u64| {
        let server = server.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(15);
            while server.fetches() < n {
                assert!(Instant::now() < deadline, "{} fetches", server.fetches());
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    // Two periodic refreshes fail; the set in force is still the last good one.
    wait_fetches(3).await;
    assert_eq!(v.verify(&token).as_deref(), Some("dave"));
    // The endpoint recovers with a rotated set: the next refresh takes it.
    server.set(jwks(&["rsa-b"]));
    server.fail(false);
    let n = server.fetches();
    wait_fetches(n + 1).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while v.verify(&token).is_some() {
        assert!(Instant::now() < deadline, "the refreshed set was not taken");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let new = sign("rsa-b", Algorithm::RS256, &claims("dave"));
    assert_eq!(v.verify(&new).as_deref(), Some("dave"));
}

/// Runs a gateway that is expected not to start; its output. Off the runtime's thread: the JWKS
/// server it fetches from runs on that thread. One that starts after all is stopped, and the
/// test fails instead of waiting for it forever.
async fn start_output(policy: &str) -> std::process::Output {
    let mut cmd = crate::harness::command(policy, "unused", testkit::free_port(), &[]);
    tokio::task::spawn_blocking(move || {
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the gateway started: still running after 60 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn the_gateway_verifies_jwks_tokens_and_refuses_to_start_without_its_set() {
    let app = App::start();
    let server = JwksServer::start(jwks(&["rsa-a", "ec-a"])).await;
    let p = format!(
        "upstream = \"{}\"\n[identity]\njwks_url = \"{}\"\n\
         [admission]\nclasses = [\"chat\"]\nglobal_concurrency = 4\nper_user_concurrency = 2\n\
         [[routes]]\npath = \"/echo\"\nclass = \"chat\"\n",
        app.url(),
        server.url()
    );
    let gw = Gateway::start(&p, &testkit::unique_prefix("gw-jwks"), &[]).await;
    let c = client();
    let call = |token: String| c.get(gw.url("/echo")).bearer_auth(token).send();
    let r = call(sign("ec-a", Algorithm::ES256, &claims("erin")))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen: Value = r.json().await.unwrap();
    assert_eq!(seen["x-fleetgate-user"], "erin", "{seen}");
    // Rotation at the provider: the new key works on the first request.
    server.set(jwks(&["rsa-b"]));
    let r = call(sign("rsa-b", Algorithm::RS256, &claims("erin")))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = call(sign("rsa-a", Algorithm::RS256, &claims("erin")))
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(problem_code(r).await, "unauthorized");
    let mut expired = claims("erin");
    expired["exp"] = json!(now() - 3600);
    let r = call(sign("rsa-b", Algorithm::RS256, &expired))
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // A set that cannot be fetched stops the start, naming the key and the URL.
    let dead = format!("http://127.0.0.1:{}/jwks.json", testkit::free_port());
    let p = p.replace(&server.url(), &dead);
    let out = start_output(&p).await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("identity.jwks_url") && err.contains(&dead),
        "{err}"
    );
    // So does one that is not a JWKS.
    server.set("{\"keys\": [{\"kty\": \"oct\", \"k\": \"c2VjcmV0\"}]}".into());
    let p = p.replace(&dead, &server.url());
    let out = start_output(&p).await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("identity.jwks_url") && err.contains("no usable signature key"),
        "{err}"
    );
}

async fn start_https(url: &str, trust: JwksTrust) -> Result<JwksVerifier, JwksError> {
    JwksVerifier::start_trusting(
        JwksSource::Url(url.parse().unwrap()),
        trust,
        ClaimChecks::default(),
        Duration::from_secs(300),
    )
    .await
}

#[tokio::test]
async fn jwks_over_https_needs_a_certificate_of_the_trusted_ca_for_the_host() {
    let ca = JwksTrust::CaFile(fixture("ca.pem"));
    let token = sign("ec-a", Algorithm::ES256, &claims("frank"));
    let server = JwksServer::start_tls("127.0.0.1", "server", jwks(&["ec-a", "rsa-a"])).await;
    // The certificate names both the address and the name.
    for host in ["127.0.0.1", "localhost"] {
        let v = start_https(&server.url_as(host), ca.clone()).await.unwrap();
        assert_eq!(v.key_count(), 2);
        assert_eq!(v.verify(&token).as_deref(), Some("frank"));
    }
    assert_eq!(server.fetches(), 2);
    // Same names, same set, but a certificate the test CA did not sign: refused at the
    // handshake, before any request is sent.
    let rogue = JwksServer::start_tls("127.0.0.1", "rogue", jwks(&["ec-a", "rsa-a"])).await;
    let e = start_https(&rogue.url(), ca.clone()).await.unwrap_err();
    assert!(matches!(e, JwksError::Fetch(_)), "{e:?}");
    // The reason, as rustls words it: the issuer, not anything else about the certificate.
    let msg = e.to_string();
    assert!(
        msg.contains(&rogue.url()) && msg.contains("UnknownIssuer"),
        "{msg}"
    );
    assert!(rogue.connections() >= 1, "the rogue server was not tried");
    assert_eq!(
        rogue.fetches(),
        0,
        "a request went over an unverified connection"
    );
    // The right certificate at an address it does not name (any 127/8 address is the loopback).
    let moved = JwksServer::start_tls("127.0.0.2", "server", jwks(&["ec-a"])).await;
    let e = start_https(&moved.url(), ca.clone()).await.unwrap_err();
    assert!(matches!(e, JwksError::Fetch(_)), "{e:?}");
    assert!(e.to_string().contains("not valid for name"), "{e}");
    assert!(moved.connections() >= 1, "the moved server was not tried");
    assert_eq!(
        moved.fetches(),
        0,
        "a request went to a host the certificate does not name"
    );
    // The system's store does not know the test CA.
    let e = start_https(&server.url(), JwksTrust::System).await;
    assert!(
        matches!(e, Err(JwksError::Fetch(_) | JwksError::Trust(_))),
        "{e:?}"
    );
}

#[tokio::test]
async fn an_https_refresh_that_meets_a_rogue_certificate_keeps_the_last_good_set() {
    let server = JwksServer::start_tls("127.0.0.1", "server", jwks(&["ec-a"])).await;
    let v = JwksVerifier::start_trusting(
        JwksSource::Url(server.url().parse().unwrap()),
        JwksTrust::CaFile(fixture("ca.pem")),
        ClaimChecks::default(),
        Duration::from_secs(1),
    )
    .await
    .unwrap();
    let old = sign("ec-a", Algorithm::ES256, &claims("gina"));
    let new = sign("rsa-b", Algorithm::RS256, &claims("gina"));
    // Someone else answers at the provider's address, with a set of their own.
    server.present("rogue");
    server.set(jwks(&["rsa-b"]));
    let n = server.connections();
    let deadline = Instant::now() + Duration::from_secs(15);
    while server.connections() < n + 2 {
        assert!(Instant::now() < deadline, "no refresh was tried");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(server.fetches(), 1, "only the first fetch was answered");
    assert_eq!(v.verify(&old).as_deref(), Some("gina"));
    assert_eq!(v.verify(&new), None, "the rogue's set was taken");
    // The provider's certificate again: the next refresh takes the set.
    server.present("server");
    let deadline = Instant::now() + Duration::from_secs(15);
    while v.verify(&new).is_none() {
        assert!(Instant::now() < deadline, "the refreshed set was not taken");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn the_gateway_fetches_its_jwks_over_https_trusting_its_ca_file_only() {
    let app = App::start();
    let server = JwksServer::start_tls("127.0.0.1", "server", jwks(&["ec-a"])).await;
    let ca = fixture("ca.pem").display().to_string();
    let p = format!(
        "upstream = \"{}\"\n[identity]\njwks_url = \"{}\"\njwks_ca_file = \"{ca}\"\n\
         [[routes]]\npath = \"/echo\"\n",
        app.url(),
        server.url()
    );
    let gw = Gateway::start(&p, &testkit::unique_prefix("gw-jwks-tls"), &[]).await;
    let r = client()
        .get(gw.url("/echo"))
        .bearer_auth(sign("ec-a", Algorithm::ES256, &claims("hana")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen: Value = r.json().await.unwrap();
    assert_eq!(seen["x-fleetgate-user"], "hana", "{seen}");
    // The same set behind a certificate the CA did not sign: the gateway does not start.
    let rogue = JwksServer::start_tls("127.0.0.1", "rogue", jwks(&["ec-a"])).await;
    let out = start_output(&p.replace(&server.url(), &rogue.url())).await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("identity.jwks_url")
            && err.contains(&rogue.url())
            && err.contains("certificate"),
        "{err}"
    );
    assert_eq!(rogue.fetches(), 0);
    // A CA file that is missing, empty, or holds no certificate: refused, naming the key.
    let dir = std::env::temp_dir().join(testkit::unique_prefix("jwks-ca"));
    std::fs::create_dir_all(&dir).unwrap();
    let missing = dir.join("missing.pem").display().to_string();
    let empty = dir.join("empty.pem");
    std::fs::write(&empty, "").unwrap();
    let empty = empty.display().to_string();
    let key = fixture("server.key").display().to_string();
    for (file, why) in [
        (&missing, "cannot read"),
        (&empty, "no CA certificate"),
        (&key, "no CA certificate"),
    ] {
        let out = start_output(&p.replace(&ca, file)).await;
        assert!(!out.status.success(), "{file}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("identity.jwks_ca_file")
                && err.contains(file.as_str())
                && err.contains(why),
            "{err}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
