//! API keys: `autos key create|list|revoke` (the real binary), admin GraphQL, expiry, and
//! `AUTOS_AUTH=off`.

use super::*;

// ---------------------------------------------------------------------------------------------
// The command line and admin GraphQL
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cli_key_create_prints_the_key_last_and_it_works_with_its_scopes() {
    let court = Court::start().await;
    let n = number(101);
    court.add_process(&n, docs(1));
    let app = TestApp::spawn(court).await;

    let read = cli_create_key(
        &app.db.url,
        &[
            "--tenant",
            "globex",
            "--scopes",
            "read",
            "--name",
            "dashboard",
        ],
    )
    .await;
    assert!(read.stdout.contains(read.id()), "{}", read.stdout);
    let write = cli_create_key(&app.db.url, &["--tenant", "globex"]).await;
    let stored = count(
        &app.db,
        &format!(
            "SELECT count(*) FROM api_keys k JOIN tenants t ON t.id = k.tenant_id
             WHERE t.slug = 'globex' AND ((k.id = '{}' AND k.scopes = '{{read}}')
                                       OR (k.id = '{}' AND k.scopes = '{{write}}'))",
            read.id(),
            write.id()
        ),
    )
    .await;
    assert_eq!(stored, 2, "both keys stored with their tenant and scopes");

    let reader = client_with(&read.key);
    let viewer = data(&reader, app.addr, VIEWER, json!({})).await;
    assert_eq!(
        viewer["viewer"],
        json!({ "tenant": "globex", "keyId": read.id(), "scopes": ["read"] })
    );
    let listed = data(&reader, app.addr, JOBS, json!({})).await;
    assert_eq!(job_ids(&listed), Vec::<String>::new());
    let refused = start_as(&reader, &app, &n).await;
    assert_forbidden_at(&refused, &["startDownload"], "read key starting a download");
    assert_eq!(jobs_in_db(&app).await, 0);

    // Without --scopes a key is a write key.
    let writer = client_with(&write.key);
    let viewer = data(&writer, app.addr, VIEWER, json!({})).await;
    assert_eq!(
        viewer["viewer"],
        json!({ "tenant": "globex", "keyId": write.id(), "scopes": ["write"] })
    );
    let (id, created) = started(&writer, &app, &n).await;
    assert!(created);
    assert_eq!(job_tenant(&app.db, &id).await, "globex");
    let job = wait_terminal_as(&writer, app.addr, &id, WAIT).await;
    assert_eq!(job["status"], "COMPLETED", "{job:#}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cli_key_list_shows_ids_tenants_and_scopes_and_never_a_secret() {
    let app = TestApp::spawn(Court::start().await).await;
    let reader = cli_create_key(
        &app.db.url,
        &["--tenant", "acme", "--scopes", "read", "--name", "reader"],
    )
    .await;
    let admin = cli_create_key(&app.db.url, &["--tenant", "globex", "--scopes", "admin"]).await;

    let listed = autos_cli_ok(&app.db.url, &["key", "list"]).await;
    for (key, tenant, scopes) in [
        (reader.key.as_str(), "acme", "read"),
        (admin.key.as_str(), "globex", "admin"),
        (app.key.as_str(), "acme", "write"),
    ] {
        let line = listed
            .lines()
            .find(|l| l.contains(key_id(key)))
            .unwrap_or_else(|| panic!("{} not listed:\n{listed}", key_id(key)));
        let columns: Vec<&str> = line.split_whitespace().collect();
        assert!(columns.contains(&tenant), "{line}");
        assert!(columns.contains(&scopes), "{line}");
        assert!(
            !listed.contains(key_secret(key)),
            "a secret is listed:\n{listed}"
        );
    }
    assert!(listed.lines().any(|l| l.contains("reader")), "{listed}");
    assert!(
        !listed.contains("autos_"),
        "a whole key is listed:\n{listed}"
    );

    let globex = autos_cli_ok(&app.db.url, &["key", "list", "--tenant", "globex"]).await;
    assert!(globex.contains(admin.id()), "{globex}");
    assert!(!globex.contains(reader.id()), "{globex}");
    assert!(!globex.contains(key_id(&app.key)), "{globex}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cli_key_revoke_stops_the_key_at_once_on_a_running_autos() {
    let app = TestApp::spawn(Court::start().await).await;
    let key = cli_create_key(&app.db.url, &["--tenant", "globex", "--scopes", "read"]).await;
    let client = client_with(&key.key);
    // Used once, so that the running autos has it cached.
    assert_eq!(
        post(&client, app.addr, VIEWER, json!({})).await.status,
        StatusCode::OK
    );

    let out = autos_cli_ok(&app.db.url, &["key", "revoke", key.id()]).await;
    assert!(out.contains(key.id()), "{out}");
    let refused = refused_soon(&client, &app, "the revoked key is refused").await;
    assert_unauthenticated(&refused, "revoked key");
    let revoked = count(
        &app.db,
        &format!(
            "SELECT count(*) FROM api_keys WHERE id = '{}' AND revoked_at IS NOT NULL",
            key.id()
        ),
    )
    .await;
    assert_eq!(revoked, 1);
    // Other keys go on working.
    assert_eq!(
        post(&app.http, app.addr, VIEWER, json!({})).await.status,
        StatusCode::OK
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_key_past_its_expiry_is_unauthenticated() {
    let app = TestApp::spawn(Court::start().await).await;
    let used = app.key("globex", &[Scope::Read]).await;
    let fresh = app.key("globex", &[Scope::Read]).await;
    let used_client = client_with(&used);
    assert_eq!(
        post(&used_client, app.addr, VIEWER, json!({})).await.status,
        StatusCode::OK
    );

    execute(
        &app.db,
        &format!(
            "UPDATE api_keys SET expires_at = now() - interval '1 minute'
             WHERE id IN ('{}', '{}')",
            key_id(&used),
            key_id(&fresh)
        ),
    )
    .await;
    // Never used before: refused on its first request.
    let got = post(&client_with(&fresh), app.addr, VIEWER, json!({})).await;
    assert_unauthenticated(&got, "expired key, never used");
    // Used before (cached): refused as soon as the change is announced.
    let got = refused_soon(&used_client, &app, "the expired key is refused").await;
    assert_unauthenticated(&got, "expired key, used before");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn admin_keys_create_list_and_revoke_keys_over_graphql() {
    let app = TestApp::spawn(Court::start().await).await;
    let admin = client_with(&app.key("ops", &[Scope::Admin]).await);

    let created = data(
        &admin,
        app.addr,
        CREATE_KEY,
        json!({ "t": "globex", "s": ["read"], "name": "from graphql" }),
    )
    .await;
    let key = created["createApiKey"]["key"]
        .as_str()
        .expect("key")
        .to_string();
    let id = key_id(&key).to_string();
    assert_eq!(
        created["createApiKey"]["apiKey"],
        json!({ "id": id, "tenant": "globex", "name": "from graphql", "scopes": ["read"],
                "revokedAt": null })
    );
    let new_client = client_with(&key);
    let viewer = data(&new_client, app.addr, VIEWER, json!({})).await;
    assert_eq!(
        viewer["viewer"],
        json!({ "tenant": "globex", "keyId": id, "scopes": ["read"] })
    );

    let all = data(&admin, app.addr, API_KEYS, json!({})).await;
    let tenants: Vec<&str> = all["apiKeys"]
        .as_array()
        .expect("keys")
        .iter()
        .map(|k| k["tenant"].as_str().unwrap_or_default())
        .collect();
    for tenant in ["acme", "ops", "globex"] {
        assert!(tenants.contains(&tenant), "{all:#}");
    }
    assert!(!all.to_string().contains(key_secret(&key)), "{all:#}");
    let globex = data(&admin, app.addr, API_KEYS, json!({ "t": "globex" })).await;
    assert_eq!(
        globex["apiKeys"],
        json!([{ "id": id, "tenant": "globex", "name": "from graphql", "scopes": ["read"],
                 "revokedAt": null }])
    );

    let revoked = data(&admin, app.addr, REVOKE_KEY, json!({ "id": id })).await;
    assert_eq!(revoked["revokeApiKey"]["id"], id.as_str());
    assert!(
        revoked["revokeApiKey"]["revokedAt"].is_string(),
        "{revoked:#}"
    );
    let got = refused_soon(&new_client, &app, "the key revoked over GraphQL is refused").await;
    assert_unauthenticated(&got, "key revoked over GraphQL");
    let sql = format!("SELECT count(*) FROM api_keys WHERE id = '{id}' AND revoked_at IS NOT NULL");
    assert_eq!(count(&app.db, &sql).await, 1);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_write_key_cannot_create_list_or_revoke_keys() {
    let app = TestApp::spawn(Court::start().await).await;
    let victim = app.key("globex", &[Scope::Read]).await;
    let keys_before = count(&app.db, "SELECT count(*) FROM api_keys").await;

    let got = post(
        &app.http,
        app.addr,
        CREATE_KEY,
        json!({ "t": "mallory", "s": ["admin"] }),
    )
    .await;
    assert_forbidden_at(&got, &["createApiKey"], "createApiKey with a write key");
    assert!(!got.body.to_string().contains("autos_"), "{:#}", got.body);
    let got = post(
        &app.http,
        app.addr,
        REVOKE_KEY,
        json!({ "id": key_id(&victim) }),
    )
    .await;
    assert_forbidden_at(&got, &["revokeApiKey"], "revokeApiKey with a write key");
    let got = post(&app.http, app.addr, API_KEYS, json!({})).await;
    assert_forbidden_at(&got, &["apiKeys"], "apiKeys with a write key");

    assert_eq!(
        count(&app.db, "SELECT count(*) FROM api_keys").await,
        keys_before
    );
    let mallory = count(
        &app.db,
        "SELECT count(*) FROM tenants WHERE slug = 'mallory'",
    )
    .await;
    assert_eq!(mallory, 0, "no tenant was made");
    let revoked = count(
        &app.db,
        "SELECT count(*) FROM api_keys WHERE revoked_at IS NOT NULL",
    )
    .await;
    assert_eq!(revoked, 0);
    let still = post(&client_with(&victim), app.addr, VIEWER, json!({})).await;
    assert_eq!(still.status, StatusCode::OK, "{:#}", still.body);
    app.stop().await;
}

// ---------------------------------------------------------------------------------------------
// AUTOS_AUTH=off
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_off_is_refused_at_start_on_a_non_loopback_bind() {
    let db = TestDb::new().await;
    let mut cmd = autos_command(&db.url);
    cmd.arg("serve")
        .env("AUTOS_AUTH", "off")
        .env("AUTOS_BIND", "0.0.0.0:0")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let out = tokio::time::timeout(Duration::from_secs(30), cmd.output())
        .await
        .expect("autos kept running with AUTOS_AUTH=off on 0.0.0.0")
        .expect("run autos");
    assert!(!out.status.success(), "exited with {}", out.status);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("AUTOS_AUTH"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn auth_off_on_loopback_needs_no_key_and_everything_belongs_to_default() {
    let court = Court::start().await;
    let n = number(102);
    court.add_process(&n, docs(2));
    let db = TestDb::new().await;
    let s3 = TestS3::start().await;
    let bind = free_port();
    let mut child = autos_process("serve", &db, &s3, &court, bind)
        .env("AUTOS_AUTH", "off")
        .spawn()
        .expect("start autos");
    let anonymous = &reqwest::Client::new();
    eventually(
        Duration::from_secs(30),
        "autos answers /healthz",
        move || async move {
            let health = anonymous.get(format!("http://{bind}/healthz")).send().await;
            health.is_ok_and(|r| r.status().is_success())
        },
    )
    .await;

    let viewer = data(anonymous, bind, VIEWER, json!({})).await;
    assert_eq!(viewer["viewer"]["tenant"], "default", "{viewer:#}");
    assert!(viewer["viewer"]["keyId"].is_null(), "{viewer:#}");
    let got = data(anonymous, bind, START, json!({ "n": n })).await;
    assert_eq!(got["startDownload"]["created"], true, "{got:#}");
    let id = got["startDownload"]["job"]["id"].as_str().expect("job id");
    assert_eq!(job_tenant(&db, id).await, "default");
    assert!(court.lookups() >= 1, "the court was asked");
    child.kill().await.expect("stop autos");
}
