//! Webhook targets: `validateWebhook` says whether a URL would be accepted, and why not.

mod common;

use autos::app::Application;
use common::*;
use serde_json::json;

async fn validate(app: &TestApp, url: &str) -> (bool, Option<String>) {
    let data = app
        .data(
            "mutation($u: String!) { validateWebhook(url: $u) { url valid reason } }",
            json!({ "u": url }),
        )
        .await;
    let v = &data["validateWebhook"];
    assert_eq!(v["url"], url);
    (
        v["valid"].as_bool().unwrap(),
        v["reason"].as_str().map(str::to_string),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn by_default_only_public_http_targets_are_valid() {
    let app = TestApp::spawn(Court::start().await).await;
    for (url, why) in [
        ("ftp://example.com/hook", "scheme"),
        ("not a url", "URL"),
        ("http://127.0.0.1:9000/hook", "loopback"),
        ("http://2130706433/", "loopback"),
        ("http://0x7f000001/", "loopback"),
        ("http://0177.0.0.1/", "loopback"),
        ("http://localhost:8080/hook", "loopback"),
        ("http://[::1]/", "loopback"),
        ("http://[::ffff:127.0.0.1]/", "loopback"),
        ("http://10.1.2.3/", "private"),
        ("http://192.168.0.10/", "private"),
        ("http://169.254.169.254/latest/meta-data", "metadata"),
        ("http://100.64.0.1/", "100.64"),
        ("https://no-such-host.invalid/hook", "resolve"),
    ] {
        let (valid, reason) = validate(&app, url).await;
        assert!(!valid, "{url} was accepted");
        let reason = reason.unwrap_or_default();
        assert!(!reason.is_empty(), "{url}: no reason");
        if why != "100.64" {
            assert!(
                reason.to_lowercase().contains(&why.to_lowercase()),
                "{url}: reason {reason:?} does not mention {why}"
            );
        }
    }
    let long = format!("https://93.184.215.14/{}", "a".repeat(2100));
    assert!(!validate(&app, &long).await.0);
    for url in ["https://93.184.215.14/hook", "http://[2606:4700::1111]/x"] {
        assert_eq!(validate(&app, url).await, (true, None), "{url}");
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_targets_and_allowlists_follow_the_configuration() {
    let court = Court::start().await;
    let db = TestDb::new().await;
    let s3 = TestS3::start().await;
    let mut cfg = config(&db.url, &s3, &court.url(), &Options::default());
    cfg.webhook_allow_private = true;
    cfg.webhook_allowed_hosts = "127.0.0.1, *.example.com".into();
    let app = Application::start(cfg, autos::app::Role::SERVE)
        .await
        .unwrap();
    let client = TestApp {
        addr: app.addr.unwrap(),
        app: Some(app),
        http: reqwest::Client::new(),
        db,
        s3,
        court,
    };
    assert_eq!(
        validate(&client, "http://127.0.0.1:9000/hook").await,
        (true, None)
    );
    let (valid, reason) = validate(&client, "http://10.0.0.1/hook").await;
    assert!(!valid);
    assert!(reason.unwrap().contains("10.0.0.1"));
    let (valid, _) = validate(&client, "https://example.com/hook").await;
    assert!(!valid, "*.example.com does not cover example.com itself");
    client.stop().await;

    // A malformed allowlist stops start-up with the variable's name.
    let db = TestDb::new().await;
    let s3 = TestS3::start().await;
    let mut cfg = config(&db.url, &s3, "http://127.0.0.1:9", &Options::default());
    cfg.webhook_allowed_hosts = "a.*.com".into();
    let err = Application::start(cfg, autos::app::Role::SERVE)
        .await
        .err()
        .expect("refused");
    assert!(
        err.to_string().contains("AUTOS_WEBHOOK_ALLOWED_HOSTS"),
        "{err}"
    );
}
