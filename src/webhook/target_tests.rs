//! Tests for `target` (beside it, not in `target/`, which `.gitignore` hides): no external
//! DNS is used, only IP literals, `localhost` and `.invalid`.

use super::*;

fn strict() -> TargetPolicy {
    TargetPolicy::default()
}

fn permissive() -> TargetPolicy {
    TargetPolicy::from_config(true, "").unwrap()
}

fn allowing(hosts: &str) -> TargetPolicy {
    TargetPolicy::from_config(false, hosts).unwrap()
}

async fn refusal(policy: &TargetPolicy, raw: &str) -> Refusal {
    policy.check(raw).await.expect_err(raw)
}

async fn kind_refused(policy: &TargetPolicy, raw: &str) -> &'static str {
    match refusal(policy, raw).await {
        Refusal::PrivateAddress { kind, .. } => kind,
        other => panic!("{raw}: {other:?}"),
    }
}

#[test]
fn syntax_accepts_http_and_https_with_ports() {
    let p = strict();
    for ok in [
        "https://hooks.example.com/autos",
        "http://example.com",
        "http://example.com:8443/x?y=1#z",
        "https://[2606:4700::1111]:444/",
    ] {
        assert!(p.check_syntax(ok).is_ok(), "{ok}");
    }
}

#[test]
fn syntax_refusals() {
    let p = strict();
    assert_eq!(
        p.check_syntax("ftp://example.com/x"),
        Err(Refusal::BadScheme("ftp".into()))
    );
    assert_eq!(
        p.check_syntax("file:///etc/passwd"),
        Err(Refusal::BadScheme("file".into()))
    );
    assert_eq!(
        p.check_syntax("javascript:alert(1)"),
        Err(Refusal::BadScheme("javascript".into()))
    );
    assert_eq!(
        p.check_syntax("https://user:pw@example.com/"),
        Err(Refusal::Credentials)
    );
    assert_eq!(
        p.check_syntax("https://user@example.com/"),
        Err(Refusal::Credentials)
    );
    for bad in [
        "",
        "not a url",
        "http://",
        "http://[::1/",
        "http://exa mple.com/",
    ] {
        assert!(
            matches!(p.check_syntax(bad), Err(Refusal::Invalid { .. })),
            "{bad}"
        );
    }
    let long = format!("https://example.com/{}", "a".repeat(MAX_URL_BYTES));
    let err = p.check_syntax(&long).unwrap_err();
    assert_eq!(err, Refusal::TooLong(long.len()));
    assert!(err.reason().contains("2048"));
    // Within the limit as given, beyond it once percent-encoded.
    let spaces = format!("https://example.com/{}", " x".repeat(700));
    assert!(matches!(p.check_syntax(&spaces), Err(Refusal::TooLong(_))));
}

#[tokio::test]
async fn numeric_spellings_of_loopback_are_refused() {
    for raw in [
        "http://127.0.0.1/",
        "http://2130706433/",
        "http://0x7f000001/",
        "http://0177.0.0.1/",
        "http://127.1/",
        "http://0x7f.1/",
        "http://[::1]/",
        "http://[::ffff:127.0.0.1]/",
        "http://[::ffff:7f00:1]/",
    ] {
        assert_eq!(kind_refused(&strict(), raw).await, "loopback", "{raw}");
    }
}

#[tokio::test]
async fn private_and_metadata_addresses_are_refused() {
    let p = strict();
    assert_eq!(
        kind_refused(&p, "http://169.254.169.254/latest/meta-data").await,
        "cloud metadata"
    );
    assert_eq!(kind_refused(&p, "http://10.0.0.1/").await, "private");
    assert_eq!(kind_refused(&p, "http://[fd00::1]/").await, "unique-local");
    assert_eq!(
        kind_refused(&p, "http://0.0.0.0:8080/").await,
        "unspecified"
    );
    assert_eq!(
        kind_refused(&p, "http://[::ffff:93.184.215.14]/").await,
        "IPv4-mapped"
    );
}

#[tokio::test]
async fn a_name_resolving_to_loopback_is_refused() {
    for raw in [
        "http://localhost/",
        "http://LOCALHOST.:8080/x",
        "http://a.localhost/",
    ] {
        let err = refusal(&strict(), raw).await;
        assert!(
            matches!(
                err,
                Refusal::PrivateAddress {
                    kind: "loopback",
                    ..
                }
            ),
            "{raw}: {err:?}"
        );
    }
}

#[tokio::test]
async fn refusal_reason_is_readable() {
    let err = refusal(&strict(), "http://127.0.0.1/").await;
    assert_eq!(
        err.reason(),
        "the host resolves to 127.0.0.1, a loopback address; private addresses are not allowed"
    );
    let err = refusal(&strict(), "http://[::]/").await;
    assert_eq!(
        err.reason(),
        "the host resolves to ::, an unspecified address; private addresses are not allowed"
    );
}

#[tokio::test]
async fn public_addresses_are_accepted() {
    let target = strict().check("https://93.184.215.14/").await.unwrap();
    assert_eq!(target.addrs, vec!["93.184.215.14:443".parse().unwrap()]);
    assert_eq!(target.url.as_str(), "https://93.184.215.14/");
    let target = strict().check("http://[2606:4700::1111]/").await.unwrap();
    assert_eq!(target.addrs, vec!["[2606:4700::1111]:80".parse().unwrap()]);
}

#[tokio::test]
async fn allow_private_accepts_loopback() {
    let target = permissive()
        .check("http://127.0.0.1:9000/hook")
        .await
        .unwrap();
    assert_eq!(target.addrs, vec!["127.0.0.1:9000".parse().unwrap()]);
    let addrs = permissive()
        .resolve(&Url::parse("http://localhost:9000/").unwrap())
        .await
        .unwrap();
    assert!(addrs
        .iter()
        .all(|a| a.ip().is_loopback() && a.port() == 9000));
    assert!(!addrs.is_empty());
}

#[tokio::test]
async fn unresolvable_names_are_refused() {
    let err = refusal(&permissive(), "https://no-such-host.invalid/hook").await;
    assert!(
        matches!(&err, Refusal::Unresolvable { host, .. } if host == "no-such-host.invalid"),
        "{err:?}"
    );
    assert!(err.reason().contains("could not be resolved"));
}

#[test]
fn host_patterns_parse() {
    assert_eq!(
        HostPattern::parse(" Hooks.Example.COM. "),
        Ok(HostPattern::Exact("hooks.example.com".into()))
    );
    assert_eq!(
        HostPattern::parse("*.Example.com"),
        Ok(HostPattern::Subdomains("example.com".into()))
    );
    assert_eq!(
        HostPattern::parse("[::1]"),
        Ok(HostPattern::Exact("::1".into()))
    );
    assert_eq!(
        HostPattern::parse("10.0.0.5"),
        Ok(HostPattern::Exact("10.0.0.5".into()))
    );
    assert_eq!(
        HostPattern::parse("*.bücher.de"),
        Ok(HostPattern::Subdomains("xn--bcher-kva.de".into()))
    );
    assert_eq!(
        HostPattern::parse("*.example.com").unwrap().to_string(),
        "*.example.com"
    );
    for bad in [
        "*",
        "*.",
        "a.*.com",
        "*.*.com",
        "*example.com",
        "example.*",
        "a..com",
        ".example.com",
        "*.10.0.0.1",
        "exa mple.com",
        "a/b",
        "ex!ample.com",
    ] {
        assert!(HostPattern::parse(bad).is_err(), "{bad}");
    }
    assert!(HostPattern::parse("a.*.com")
        .unwrap_err()
        .contains("a.*.com"));
}

#[test]
fn host_patterns_match() {
    let exact = HostPattern::parse("example.com").unwrap();
    assert!(exact.matches("example.com"));
    assert!(!exact.matches("a.example.com"));
    let wild = HostPattern::parse("*.example.com").unwrap();
    assert!(wild.matches("a.example.com"));
    assert!(wild.matches("a.b.example.com"));
    assert!(!wild.matches("example.com"));
    assert!(!wild.matches(".example.com"));
    assert!(!wild.matches("badexample.com"));
    assert!(!wild.matches("example.com.evil.net"));
}

#[test]
fn from_config_reads_lists() {
    let p = TargetPolicy::from_config(false, " a.example.com , *.Hooks.NET,, ").unwrap();
    assert!(!p.allow_private);
    assert_eq!(
        p.allowed_hosts,
        vec![
            HostPattern::Exact("a.example.com".into()),
            HostPattern::Subdomains("hooks.net".into()),
        ]
    );
    assert!(TargetPolicy::from_config(false, "")
        .unwrap()
        .allowed_hosts
        .is_empty());
    assert!(TargetPolicy::from_config(true, " ").unwrap().allow_private);
    let err = TargetPolicy::from_config(false, "ok.com, *").unwrap_err();
    assert!(err.contains('*'), "{err}");
}

#[tokio::test]
async fn allowlist_is_checked_before_dns() {
    let p = allowing("*.example.com, 93.184.215.14, hooks.invalid");
    let check = |raw: &'static str| p.check_host(&Url::parse(raw).unwrap());
    assert_eq!(check("https://a.example.com/"), Ok(()));
    assert_eq!(check("https://A.B.Example.COM./"), Ok(()));
    assert_eq!(
        check("https://example.com/"),
        Err(Refusal::NotAllowedHost("example.com".into()))
    );
    assert_eq!(
        refusal(&p, "https://evil.invalid/").await,
        Refusal::NotAllowedHost("evil.invalid".into())
    );
    assert!(p.check("https://93.184.215.14/x").await.is_ok());
    assert_eq!(
        refusal(&p, "https://1.1.1.1/").await,
        Refusal::NotAllowedHost("1.1.1.1".into())
    );
    // An allowed host is still resolved and checked.
    assert!(matches!(
        refusal(&p, "https://hooks.invalid/").await,
        Refusal::Unresolvable { .. }
    ));
    let p = allowing("localhost");
    assert!(matches!(
        refusal(&p, "http://localhost/").await,
        Refusal::PrivateAddress { .. }
    ));
}
