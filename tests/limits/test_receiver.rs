//! The built-in webhook test receiver runs only when asked for, or while the embedded
//! defaults are in use.

use super::*;
use autos::config::Config;

/// POST /webhooks/test-receiver at `addr` with an unsigned message; the status.
async fn post_receiver(addr: SocketAddr) -> StatusCode {
    reqwest::Client::new()
        .post(format!("http://{addr}/webhooks/test-receiver"))
        .json(&json!({ "type": "webhook.test" }))
        .send()
        .await
        .expect("request")
        .status()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_test_receiver_is_not_served_when_turned_off() {
    let off = spawn_configured(Court::start().await, |c| c.test_receiver = Some(false)).await;
    assert_eq!(post_receiver(off.addr).await, StatusCode::NOT_FOUND);
    off.stop().await;

    // Turned on, the route is there (and refuses the unsigned message).
    let on = TestApp::spawn(Court::start().await).await;
    let status = post_receiver(on.addr).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    on.stop().await;
}

#[test]
fn the_test_receiver_defaults_to_on_only_with_the_embedded_defaults() {
    let embedded = || {
        let mut c = Config::defaults();
        c.database_url = None;
        c.s3_endpoint = None;
        c.source_url = None;
        c.test_receiver = None;
        c
    };
    assert!(embedded().test_receiver(), "embedded defaults: on");

    let with = |what: &str, asked: Option<bool>| {
        let mut c = embedded();
        match what {
            "DATABASE_URL" => c.database_url = Some("postgres://db.example/autos".into()),
            "AUTOS_S3_ENDPOINT" => c.s3_endpoint = Some("https://s3.example.com".parse().unwrap()),
            _ => c.source_url = Some("https://tribunal.example.jus.br/api".into()),
        }
        c.test_receiver = asked;
        c
    };
    for what in ["DATABASE_URL", "AUTOS_S3_ENDPOINT", "AUTOS_SOURCE_URL"] {
        assert!(!with(what, None).test_receiver(), "with {what}: off");
        assert!(
            with(what, Some(true)).test_receiver(),
            "with {what} and AUTOS_TEST_RECEIVER=true: on"
        );
    }
    let mut refused = embedded();
    refused.test_receiver = Some(false);
    assert!(!refused.test_receiver(), "AUTOS_TEST_RECEIVER=false: off");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn autos_serve_with_its_own_services_has_no_test_receiver_unless_asked() {
    let court = Court::start().await;
    let db = TestDb::new().await;
    let s3 = TestS3::start().await;
    for (asked, expected) in [
        (None, StatusCode::NOT_FOUND),
        (Some("true"), StatusCode::UNAUTHORIZED),
    ] {
        let addr = free_port();
        let mut command = autos_process("serve", &db, &s3, &court, addr);
        if let Some(value) = asked {
            command.env("AUTOS_TEST_RECEIVER", value);
        }
        let mut child = command.spawn().expect("spawn autos");
        let http = reqwest::Client::new();
        eventually(Duration::from_secs(30), "autos serve is ready", || {
            let http = http.clone();
            async move {
                http.get(format!("http://{addr}/readyz"))
                    .send()
                    .await
                    .is_ok_and(|r| r.status() == StatusCode::OK)
            }
        })
        .await;
        assert_eq!(
            post_receiver(addr).await,
            expected,
            "AUTOS_TEST_RECEIVER={asked:?}"
        );
        child.kill().await.expect("stop autos");
    }
}
