//! Who is calling: established once at the front of the gateway, from an HS256 bearer token, a
//! bearer token verified against an identity provider's JWKS (`jwks.rs`), or a header set by a
//! trusted authentication proxy. The app receives the result in its identity
//! header (`X-Fleetgate-User` by default) and nothing else: whatever value a client put in that
//! header is removed first, so the app can trust it.

use http::{HeaderName, HeaderValue, Request};
use limiter_tower::{HeaderKey, JwtClaimKey, KeyExtractor};

use crate::jwks::{ClaimChecks, JwksVerifier};

/// Where the identity comes from.
#[derive(Debug, Clone)]
enum Source {
    /// The `sub` of a verified HS256 bearer token (boxed: the verifier is large, and built once).
    Jwt(Box<JwtClaimKey>),
    /// The `sub` of a bearer token signed with a key of a JWKS.
    Jwks(JwksVerifier),
    /// A header written by a trusted proxy.
    Header(HeaderKey),
}

/// Establishes the caller's identity and rewrites the identity header the app reads.
#[derive(Debug, Clone)]
pub struct IdentityResolver {
    source: Option<Source>,
    header: HeaderName,
}

impl IdentityResolver {
    /// No identity: every request is anonymous; the identity header is still stripped.
    pub fn anonymous(header: HeaderName) -> Self {
        IdentityResolver {
            source: None,
            header,
        }
    }

    /// The `sub` claim of a bearer token verified with the HS256 `secret`.
    pub fn jwt(secret: &[u8], header: HeaderName) -> Result<Self, limiter_tower::EmptySecret> {
        Self::jwt_checked(secret, &ClaimChecks::default(), header)
    }

    /// As [`IdentityResolver::jwt`], with `iss` / `aud` checks.
    pub fn jwt_checked(
        secret: &[u8],
        checks: &ClaimChecks,
        header: HeaderName,
    ) -> Result<Self, limiter_tower::EmptySecret> {
        let mut key = JwtClaimKey::hs256(secret)?;
        if let Some(iss) = &checks.issuer {
            key = key.issuer(iss);
        }
        if let Some(aud) = &checks.audience {
            key = key.audience(aud);
        }
        Ok(IdentityResolver {
            source: Some(Source::Jwt(Box::new(key))),
            header,
        })
    }

    /// The `sub` of a bearer token verified against the keys of `verifier`.
    pub fn jwks(verifier: JwksVerifier, header: HeaderName) -> Self {
        IdentityResolver {
            source: Some(Source::Jwks(verifier)),
            header,
        }
    }

    /// Whether [`IdentityResolver::prepare`] has anything to do (a JWKS source).
    pub fn needs_prepare(&self) -> bool {
        matches!(self.source, Some(Source::Jwks(_)))
    }

    /// Runs before [`IdentityResolver::apply`]: a token naming a key the JWKS lacks makes it
    /// refetch the set (bounded), so a key rotated at the provider verifies at once.
    pub fn prepare<B>(
        &self,
        req: &Request<B>,
    ) -> impl Future<Output = ()> + Send + 'static + use<B> {
        let work = match &self.source {
            Some(Source::Jwks(v)) => Some(v.prepare(req)),
            _ => None,
        };
        async move {
            if let Some(work) = work {
                work.await;
            }
        }
    }

    /// The value of the header `from` (set by a trusted auth proxy).
    pub fn from_header(from: HeaderName, header: HeaderName) -> Self {
        IdentityResolver {
            source: Some(Source::Header(HeaderKey::new(from))),
            header,
        }
    }

    /// The identity header the app reads.
    pub fn header(&self) -> &HeaderName {
        &self.header
    }

    /// Resolves the identity of `req` (`None`: anonymous, or a token that does not verify), then
    /// replaces the identity header with it (or removes it).
    pub fn apply<B>(&self, req: &mut Request<B>) -> Option<String> {
        let user = match &self.source {
            None => None,
            Some(Source::Jwt(k)) => k.key(req),
            Some(Source::Jwks(v)) => crate::jwks::bearer(req).and_then(|t| v.verify(t)),
            Some(Source::Header(k)) => k.key(req),
        };
        req.headers_mut().remove(&self.header);
        if let Some(u) = &user
            && let Ok(v) = HeaderValue::from_str(u)
        {
            req.headers_mut().insert(self.header.clone(), v);
        }
        user
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_forged_identity_header_is_replaced_or_removed() {
        let out = HeaderName::from_static("x-fleetgate-user");
        let r = IdentityResolver::from_header(HeaderName::from_static("x-user-id"), out.clone());
        let mut req = Request::builder()
            .header("x-user-id", "alice")
            .header("x-fleetgate-user", "root")
            .header("x-fleetgate-user", "admin")
            .body(())
            .unwrap();
        assert_eq!(r.apply(&mut req).as_deref(), Some("alice"));
        let seen: Vec<_> = req.headers().get_all(&out).iter().collect();
        assert_eq!(seen, ["alice"]);
        let mut anon = Request::builder()
            .header("x-fleetgate-user", "root")
            .body(())
            .unwrap();
        assert_eq!(r.apply(&mut anon), None);
        assert!(anon.headers().get(&out).is_none());
    }
}
