//! The audit log (per tenant, newest first, retention) and API key secrets at rest.

use super::*;

/// The nodes of an `auditLog` answer.
fn entries(data: &Value) -> Vec<Value> {
    data["auditLog"]["edges"]
        .as_array()
        .expect("edges")
        .iter()
        .map(|e| e["node"].clone())
        .collect()
}

/// The (action, target, outcome, keyId, clientAddress) of an audit entry.
fn summary(entry: &Value) -> (String, String, String, Option<String>, String) {
    let text = |name: &str| entry[name].as_str().unwrap_or_default().to_string();
    let key = entry["keyId"].as_str().map(str::to_string);
    (
        text("action"),
        text("target"),
        text("outcome"),
        key,
        text("clientAddress"),
    )
}

// ---------------------------------------------------------------------------------------------
// The audit log
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_audit_log_shows_each_tenants_mutations_and_key_events_newest_first() {
    let court = Court::start().await;
    let (n1, n2, n3) = (number(122), number(123), number(124));
    slow_case(&court, &n1, 22);
    court.add_process(&n2, docs(23));
    court.add_process(&n3, docs(24));
    let app = TestApp::spawn(court).await;
    let globex = client_with(&app.key("globex", &[Scope::Write]).await);
    let admin = client_with(&app.key("ops", &[Scope::Admin]).await);
    let writer = key_id(&app.key).to_string();

    let reader = cli_create_key(&app.db.url, &["--tenant", TENANT, "--scopes", "read"]).await;
    let (job, _) = started(&app.http, &app, &n1).await;
    let cancelled = data(&app.http, app.addr, CANCEL, json!({ "id": job })).await;
    assert_eq!(cancelled["cancelJob"]["status"], "CANCELLED");
    let refused = start_as(&client_with(&reader.key), &app, &n2).await;
    assert_forbidden_at(&refused, &["startDownload"], "read key");
    let (theirs, _) = started(&globex, &app, &n3).await;

    let own = entries(&data(&app.http, app.addr, AUDIT, json!({})).await);
    let local = "127.0.0.1".to_string();
    let newest: Vec<_> = own.iter().take(4).map(summary).collect();
    assert_eq!(
        newest,
        vec![
            (
                "startDownload".into(),
                n2.clone(),
                "FORBIDDEN".into(),
                Some(reader.id().to_string()),
                local.clone()
            ),
            (
                "cancelJob".into(),
                job.clone(),
                "ok".into(),
                Some(writer.clone()),
                local.clone()
            ),
            (
                "startDownload".into(),
                n1.clone(),
                "ok".into(),
                Some(writer.clone()),
                local.clone()
            ),
            (
                "key.create".into(),
                reader.id().to_string(),
                "ok".into(),
                None,
                "cli".into()
            ),
        ],
        "{own:#?}"
    );
    assert!(own.iter().all(|e| e["tenant"] == TENANT), "{own:#?}");
    let times: Vec<&str> = own
        .iter()
        .map(|e| e["at"].as_str().unwrap_or_default())
        .collect();
    let parsed: Vec<_> = times
        .iter()
        .map(|t| chrono::DateTime::parse_from_rfc3339(t).expect("a date"))
        .collect();
    assert!(
        parsed.windows(2).all(|w| w[0] >= w[1]),
        "newest first: {times:?}"
    );

    let targets = |list: &[Value]| -> Vec<String> {
        list.iter()
            .map(|e| e["target"].as_str().unwrap_or_default().to_string())
            .collect()
    };
    let their_log = entries(&data(&globex, app.addr, AUDIT, json!({})).await);
    assert!(
        their_log.iter().all(|e| e["tenant"] == "globex"),
        "{their_log:#?}"
    );
    assert!(targets(&their_log).contains(&n3), "{their_log:#?}");
    for mine in [&n1, &n2, &job, &reader.id().to_string()] {
        assert!(
            !targets(&their_log).contains(mine),
            "{mine} shown to globex"
        );
    }
    let got = post(&app.http, app.addr, AUDIT, json!({ "t": "globex" })).await;
    assert_forbidden_at(&got, &["auditLog"], "a write key naming another tenant");

    let every = targets(&entries(&data(&admin, app.addr, AUDIT, json!({})).await));
    for target in [&n1, &n2, &job, &n3] {
        assert!(
            every.contains(target),
            "{target} missing for the admin: {every:?}"
        );
    }
    let filtered = entries(&data(&admin, app.addr, AUDIT, json!({ "t": "globex" })).await);
    assert!(
        filtered.iter().all(|e| e["tenant"] == "globex"),
        "{filtered:#?}"
    );
    assert!(targets(&filtered).contains(&n3));
    assert!(!targets(&filtered).contains(&n1));

    wait_terminal_as(&globex, app.addr, &theirs, WAIT).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_sweeper_pass_deletes_audit_entries_past_their_retention() {
    // Only the pass made here runs in the test's time.
    let options = Options {
        sweep_ms: 3_600_000,
        ..Options::default()
    };
    let app = TestApp::spawn_with(Court::start().await, options).await;
    execute(
        &app.db,
        "INSERT INTO audit_log (at, tenant_id, action, target, outcome)
         SELECT now() - interval '400 days', id, 'cancelJob', 'aged-400-days', 'ok'
         FROM tenants WHERE slug = 'acme';
         INSERT INTO audit_log (at, tenant_id, action, target, outcome)
         SELECT now() - interval '300 days', id, 'cancelJob', 'aged-300-days', 'ok'
         FROM tenants WHERE slug = 'acme';",
    )
    .await;
    let visible = entries(&data(&app.http, app.addr, AUDIT, json!({})).await);
    assert!(
        visible.iter().any(|e| e["target"] == "aged-400-days"),
        "{visible:#?}"
    );
    let before = count(&app.db, "SELECT count(*) FROM audit_log").await;

    let swept = autos::jobs::sweeper::sweep(app.services())
        .await
        .expect("sweep");
    assert_eq!(swept.pruned.audit_entries, 1);
    let aged = |target: &'static str| {
        let sql = format!("SELECT count(*) FROM audit_log WHERE target = '{target}'");
        let db = &app.db;
        async move { count(db, &sql).await }
    };
    assert_eq!(aged("aged-400-days").await, 0);
    assert_eq!(aged("aged-300-days").await, 1);
    assert_eq!(
        count(&app.db, "SELECT count(*) FROM audit_log").await,
        before - 1
    );
    app.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Secrets at rest
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn api_key_secrets_are_not_in_the_database() {
    let app = TestApp::spawn(Court::start().await).await;
    let admin = app.key("ops", &[Scope::Admin]).await;
    let mut keys = vec![app.key.clone(), admin.clone()];
    for args in [
        &["--tenant", "globex", "--scopes", "read"][..],
        &[
            "--tenant",
            "acme",
            "--scopes",
            "write,admin",
            "--name",
            "ops",
        ][..],
    ] {
        keys.push(cli_create_key(&app.db.url, args).await.key);
    }
    let admin = client_with(&admin);
    for tenant in ["globex", "initech"] {
        let created = data(&admin, app.addr, CREATE_KEY, json!({ "t": tenant })).await;
        keys.push(
            created["createApiKey"]["key"]
                .as_str()
                .expect("key")
                .to_string(),
        );
    }
    // Every key has been used, so anything kept about its use is in the database too.
    for key in &keys {
        let got = post(&client_with(key), app.addr, VIEWER, json!({})).await;
        assert_eq!(got.status, StatusCode::OK, "{:#}", got.body);
    }

    let dump = pg_dump(&app.db.url);
    for key in &keys {
        let (id, secret) = (key_id(key), key_secret(key));
        assert!(
            dump.contains(id),
            "the dump lacks the key id {id}: the check would prove nothing"
        );
        assert!(!dump.contains(key.as_str()), "key {id} is stored whole");
        assert!(!dump.contains(secret), "the secret of key {id} is stored");
        assert!(
            !dump.contains(&hex::encode(secret.as_bytes())),
            "the secret of key {id} is stored as bytes"
        );
    }
    app.stop().await;
}
