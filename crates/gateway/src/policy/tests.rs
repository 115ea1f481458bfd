//! The policy file's checks: every refusal names its key; the README's policy loads.

#![allow(clippy::unwrap_used)]

use super::*;

mod checks {
    use super::*;

    const BASE: &str = r#"
upstream = "http://127.0.0.1:3000"
[identity]
header = "X-User-Id"
[admission]
classes = ["chat", "export"]
global_concurrency = 20
per_user_concurrency = 2
[[routes]]
method = "POST"
path = "/api/chat"
class = "chat"
per_ip_per_min = 5
[[routes]]
path = "/api/export/*"
class = "export"
"#;

    fn err(extra: &str) -> String {
        Policy::parse(&format!("{BASE}{extra}"))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn a_good_policy_loads_with_defaults() {
        let p = Policy::parse(BASE).unwrap();
        assert_eq!(p.identity.identity_header, "X-Fleetgate-User");
        let a = p.admission.unwrap();
        assert_eq!((a.queue_timeout_ms, a.max_queue), (60_000, 500));
        assert!(!p.default.refuse);
        assert_eq!(p.routes.len(), 2);
        assert!(p.breaker.enabled);
        assert_eq!(p.admin.path, "/api/system-health");
        assert_eq!(
            p.breaker.to_store(),
            breaker_store::BreakerPolicy::default()
        );
    }

    #[test]
    fn no_per_user_limit_is_zero() {
        let p =
            Policy::parse(&BASE.replace("per_user_concurrency = 2", "per_user_concurrency = 0"))
                .unwrap();
        assert_eq!(p.admission.unwrap().per_user_concurrency, 0);
        let e = Policy::parse(&BASE.replace("global_concurrency = 20", "global_concurrency = 0"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("admission.global_concurrency: must be above 0"),
            "{e}"
        );
    }

    #[test]
    fn errors_name_the_key() {
        let e = err("[[routes]]\npath = \"/x\"\nclass = \"research\"\n");
        assert!(e.contains("routes[2] (/x).class"), "{e}");
        let e = err("[[routes]]\npath = \"x*y\"\n");
        assert!(e.contains("routes[2] (x*y).path"), "{e}");
        let e = err("[[routes]]\npath = \"/x\"\nper_ip_per_min = 0\n");
        assert!(e.contains("per_ip_per_min: must be above 0"), "{e}");
        let e = err("[[routes]]\npath = \"/x\"\nper_ip_per_minute = 3\n");
        assert!(e.contains("unknown field"), "{e}");
        let e = err("[[routes]]\npath = \"/x\"\ndaily_quota = 0\n");
        assert!(
            e.contains("routes[2] (/x).daily_quota: must be above 0"),
            "{e}"
        );
        let e = err("[admin]\npath = \"admin\"\n");
        assert!(e.contains("admin.path"), "{e}");
        let p = Policy::parse(&format!("{BASE}[admin]\npath = \"/_fleetgate\"\n")).unwrap();
        assert_eq!(p.admin.path, "/_fleetgate");
        let e = err("[quota]\nfree = 3\n");
        assert!(e.contains("unknown field"), "{e}");
        let e = err("[breaker]\nfailure_threshold = 0\n");
        assert!(
            e.contains("[breaker]: failure_threshold must be >= 1"),
            "{e}"
        );
        let e = err("[breaker]\nopen_after = 3\n");
        assert!(e.contains("unknown field"), "{e}");
        let e = Policy::parse(&BASE.replace("global_concurrency = 20", "global_concurrency = 0"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("admission.global_concurrency"), "{e}");
        let e = Policy::parse(&BASE.replace("http://127", "ftp://127"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("upstream"), "{e}");
    }

    #[test]
    fn user_limits_need_an_identity() {
        let e = Policy::parse(&BASE.replace("header = \"X-User-Id\"", ""))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("names no jwt_hs256_secret_env, jwks_file"),
            "{e}"
        );
    }

    #[test]
    fn jwks_keys_are_checked() {
        let with = |id: &str| {
            Policy::parse(&BASE.replace("header = \"X-User-Id\"", id))
                .map(|p| p.identity)
                .map_err(|e| e.to_string())
        };
        let id =
            with("jwks_url = \"http://idp.internal/jwks.json\"\njwt_audience = \"app\"").unwrap();
        assert_eq!(id.jwks_refresh_secs, 300);
        assert_eq!(id.jwt_audience.as_deref(), Some("app"));
        let id = with("jwks_url = \"https://idp.example/jwks.json\"").unwrap();
        assert_eq!(id.jwks_ca_file, None);
        let id = with(
            "jwks_url = \"https://idp.example/jwks.json\"\njwks_ca_file = \"/etc/idp-ca.pem\"",
        )
        .unwrap();
        assert_eq!(id.jwks_ca_file.as_deref(), Some("/etc/idp-ca.pem"));
        let e = with("jwks_url = \"ftp://idp.example/jwks.json\"").unwrap_err();
        assert!(e.contains("identity.jwks_url"), "{e}");
        // A CA file is only for an https URL, and must name a file.
        let e =
            with("jwks_url = \"http://idp.internal/k\"\njwks_ca_file = \"/ca.pem\"").unwrap_err();
        assert!(e.contains("identity.jwks_ca_file"), "{e}");
        let e = with("jwks_file = \"/k.json\"\njwks_ca_file = \"/ca.pem\"").unwrap_err();
        assert!(e.contains("identity.jwks_ca_file"), "{e}");
        let e = with("jwks_url = \"https://idp.example/k\"\njwks_ca_file = \"\"").unwrap_err();
        assert!(e.contains("identity.jwks_ca_file"), "{e}");
        let e = with("jwks_file = \"/k.json\"\njwks_url = \"http://x/k\"").unwrap_err();
        assert!(e.contains("set one of"), "{e}");
        let e = with("jwks_file = \"/k.json\"\njwks_refresh_secs = 0").unwrap_err();
        assert!(e.contains("identity.jwks_refresh_secs"), "{e}");
        let e = with("header = \"X-User\"\njwt_issuer = \"me\"").unwrap_err();
        assert!(e.contains("jwt_issuer"), "{e}");
    }
}

mod readme {
    use super::*;

    /// The policy the workspace README shows is one the gateway accepts.
    #[test]
    fn the_readme_policy_loads() {
        let readme = include_str!("../../../../README.md");
        let section = readme
            .split("## Put fleetgate in front of your app")
            .nth(1)
            .unwrap();
        let toml = section
            .split("```toml\n")
            .nth(1)
            .unwrap()
            .split("```")
            .next()
            .unwrap();
        let p = Policy::parse(toml).unwrap();
        assert_eq!(p.routes.len(), 3);
        let a = p.admission.unwrap();
        assert_eq!(a.classes, ["chat", "research", "export"]);
        assert_eq!((a.global_concurrency, a.per_user_concurrency), (20, 2));
        let per_ip: Vec<_> = p.routes.iter().map(|r| r.per_ip_per_min).collect();
        assert_eq!(per_ip, [Some(5), Some(10), Some(3)]);
        let quotas: Vec<_> = p.routes.iter().map(|r| r.daily_quota).collect();
        assert_eq!(quotas, [Some(3), None, None], "3 chats a day");
    }
}
