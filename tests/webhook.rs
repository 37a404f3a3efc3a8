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
    let key = create_key(&db.url, TENANT, &[autos::auth::Scope::Write]).await;
    let client = TestApp {
        addr: app.addr.unwrap(),
        app: Some(app),
        http: client_with(&key),
        key,
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_built_in_test_receiver_verifies_what_autos_sends() {
    let court = Court::start().await;
    let n = number(9090);
    court.add_process(&n, vec![Doc::new("d1", "Sentença.pdf", bytes(3000, 9))]);
    // Default policy: private targets are refused, but the built-in receiver is this service.
    let app = TestApp::spawn(court).await;
    let receiver = app.url("/webhooks/test-receiver");

    let sent = app
        .data(
            "mutation($u: String!) { sendTestWebhook(url: $u) { url delivered statusCode attempts error } }",
            json!({ "u": receiver }),
        )
        .await["sendTestWebhook"]
        .clone();
    assert_eq!(
        sent,
        json!({ "url": receiver, "delivered": true, "statusCode": 200, "attempts": 1, "error": null })
    );

    // A job's end reaches it too, signed.
    let started = app
        .data(
            "mutation($n: String!, $w: String) { startDownload(input: {number: $n, webhookUrl: $w}) { job { id } } }",
            json!({ "n": n, "w": receiver }),
        )
        .await;
    let id = started["startDownload"]["job"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    app.wait_terminal(&id, std::time::Duration::from_secs(30))
        .await;
    let query = "{ testWebhookDeliveries { eventType signatureValid messageId body } }";
    let mut received = json!([]);
    for _ in 0..100 {
        received = app.data(query, json!({})).await["testWebhookDeliveries"].clone();
        if received.as_array().unwrap().len() >= 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let received = received.as_array().unwrap();
    assert_eq!(received.len(), 2, "{received:?}");
    assert_eq!(received[0]["eventType"], "job.completed");
    assert_eq!(received[1]["eventType"], "webhook.test");
    assert!(received.iter().all(|r| r["signatureValid"] == true));
    let body: serde_json::Value =
        serde_json::from_str(received[0]["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["data"]["jobId"], id.as_str());
    assert_eq!(body["data"]["processNumber"], n.as_str());
    let job = app
        .data(
            "query($id: ID!) { job(id: $id) { webhook { url sent attempts status statusCode deliveredAt } } }",
            json!({ "id": id }),
        )
        .await;
    let webhook = &job["job"]["webhook"];
    assert_eq!(webhook["sent"], true, "{webhook}");
    assert_eq!(webhook["attempts"], 1);
    assert_eq!(webhook["status"], "DELIVERED");
    assert_eq!(webhook["statusCode"], 200);

    // A forged message is answered 401 and shown as not verified.
    let forged = app
        .http
        .post(&receiver)
        .header("webhook-id", "msg_forged")
        .header(
            "webhook-timestamp",
            chrono::Utc::now().timestamp().to_string(),
        )
        .header("webhook-signature", "v1,AAAA")
        .body(r#"{"type":"job.completed"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 401);
    // No tenant sent it: it is not shown to the tenant's key, but to an admin key (which sees
    // every tenant's messages, and those of none).
    let own = app.data(query, json!({})).await["testWebhookDeliveries"].clone();
    assert!(
        own.as_array()
            .unwrap()
            .iter()
            .all(|r| r["messageId"] != "msg_forged"),
        "{own:#}"
    );
    let admin = app.key(TENANT, &[autos::auth::Scope::Admin]).await;
    let body = post_gql(&client_with(&admin), app.addr, query, json!({})).await;
    assert!(body.get("errors").is_none(), "{body:#}");
    let latest = body["data"]["testWebhookDeliveries"][0].clone();
    assert_eq!(latest["messageId"], "msg_forged");
    assert_eq!(latest["signatureValid"], false);
    app.stop().await;
}
