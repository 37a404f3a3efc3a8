//! The progress page, driven in headless Chromium over the DevTools protocol (one fresh browser
//! profile per page visit): from the start button to 100 % and a working download link, with
//! updates arriving over the WebSocket subscription; and the page's credentials: an API key from
//! the `#key=` link or pasted in, a progress token from a `#token=` link, no credential, and a
//! read-only key. Every test checks what the page shows and what the server did.

mod common;

use autos::auth::Scope;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use common::browser::Browser;
use common::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const LOAD: Duration = Duration::from_secs(20);
const RUN: Duration = Duration::from_secs(60);

/// A process of `count` documents of 40,000 bytes that the court sends slowly (one chunk of
/// `chunk` bytes every `every`, on the first request of each), so that a page watches it run.
fn slow_process(court: &Court, n: &str, count: u8, chunk: usize, every: Duration) {
    let docs: Vec<Doc> = (0..count)
        .map(|i| Doc::new(&format!("d{i}"), &format!("Peça {i}.pdf"), bytes(40_000, i)))
        .collect();
    for doc in &docs {
        court.fail(n, &doc.id, vec![Fault::Slow { chunk, every }]);
    }
    court.add_process(n, docs);
}

/// A process of `count` small documents, sent at once.
fn quick_process(court: &Court, n: &str, count: u8) {
    let docs = (0..count)
        .map(|i| {
            Doc::new(
                &format!("q{i}"),
                &format!("Anexo {i}.pdf"),
                bytes(5_000, 100 + i),
            )
        })
        .collect();
    court.add_process(n, docs);
}

/// `autos_{id}_{secret}` → (id, secret).
fn key_parts(key: &str) -> (String, String) {
    let rest = key.strip_prefix("autos_").expect("an autos key");
    let (id, secret) = rest.split_once('_').expect("autos_{id}_{secret}");
    (id.to_string(), secret.to_string())
}

/// Every job in the database, oldest first: (tenant, id, status).
async fn jobs_in_db(app: &TestApp) -> Vec<(String, String, String)> {
    let pool = app.db.pool().await;
    let rows: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT t.slug, j.id::text, j.status FROM download_jobs j
         JOIN tenants t ON t.id = j.tenant_id ORDER BY j.created_at, j.id",
    )
    .fetch_all(&pool)
    .await
    .expect("read jobs");
    pool.close().await;
    rows
}

/// The audit log's `startDownload` entries, oldest first: (key id, target, outcome).
async fn start_audits(app: &TestApp) -> Vec<(Option<String>, Option<String>, String)> {
    let pool = app.db.pool().await;
    let rows = sqlx::query_as(
        "SELECT key_id, target, outcome FROM audit_log WHERE action = 'startDownload' ORDER BY id",
    )
    .fetch_all(&pool)
    .await
    .expect("read the audit log");
    pool.close().await;
    rows
}

/// `createProgressToken` with the app's key: (token, expiresAt).
async fn progress_token(app: &TestApp, job: &str, ttl: i32) -> (String, String) {
    let data = app
        .data(
            "mutation($id: ID!, $ttl: Int) { createProgressToken(jobId: $id, ttlSeconds: $ttl) {
                token expiresAt } }",
            json!({ "id": job, "ttl": ttl }),
        )
        .await;
    let token = data["createProgressToken"]["token"].as_str().unwrap();
    assert!(token.starts_with("apt_"), "{data:#}");
    let expires = data["createProgressToken"]["expiresAt"].as_str().unwrap();
    (token.to_string(), expires.to_string())
}

/// Waits until the page shows a terminal job status; returns it.
async fn terminal_status(browser: &mut Browser) -> String {
    let deadline = Instant::now() + RUN;
    loop {
        let status = browser
            .text("document.getElementById('status').getAttribute('data-status') || document.getElementById('status').textContent")
            .await;
        if ["COMPLETED", "FAILED", "CANCELLED"]
            .iter()
            .any(|s| status.contains(s))
        {
            return status;
        }
        assert!(Instant::now() < deadline, "page still shows {status:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The page shows `count` AVAILABLE documents, each with a download link, and the first link
/// serves `size` bytes.
async fn assert_documents_served(browser: &mut Browser, count: i64, size: usize) {
    assert_eq!(
        browser
            .eval("document.querySelectorAll('#documents tr[data-status=AVAILABLE]').length")
            .await,
        count
    );
    assert_eq!(
        browser
            .eval("document.querySelectorAll('#documents a.download').length")
            .await,
        count
    );
    let href = browser
        .text("document.querySelector('#documents a.download').href")
        .await;
    let response = reqwest::get(&href).await.unwrap();
    assert_eq!(response.status(), 200, "{href}");
    assert_eq!(response.bytes().await.unwrap().len(), size);
}

/// The progress events the page received over its WebSocket: at least one, in order, up to 100.
async fn live_progress(browser: &mut Browser) -> Vec<i64> {
    let progress: Vec<i64> =
        serde_json::from_value(browser.eval("window.__progress").await).expect("progress events");
    assert!(!progress.is_empty(), "no live updates");
    assert!(progress.windows(2).all(|w| w[0] <= w[1]), "{progress:?}");
    assert_eq!(progress.last(), Some(&100), "{progress:?}");
    progress
}

/// The page's WebSockets: (url, frames sent) of each.
async fn sockets(browser: &mut Browser) -> Vec<(String, Vec<Value>)> {
    let sockets = browser.eval("window.__sockets").await;
    sockets
        .as_array()
        .expect("sockets")
        .iter()
        .map(|s| {
            let sent = s["sent"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| serde_json::from_str(f.as_str().unwrap()).unwrap())
                .collect();
            (s["url"].as_str().unwrap().to_string(), sent)
        })
        .collect()
}

/// Everything the page shows or holds in its markup (attributes, text, the address).
async fn page_text(browser: &mut Browser) -> String {
    browser
        .text("location.href + '\\n' + document.title + '\\n' + document.documentElement.outerHTML + '\\n' + document.body.innerText")
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_progress_page_follows_a_download_to_the_end() {
    let court = Court::start().await;
    let n = number(77);
    // Slow enough that the page watches the job run, not just its end.
    slow_process(&court, &n, 6, 8_000, Duration::from_millis(60));
    let app = TestApp::spawn_with(
        court,
        Options {
            workers: 2,
            batch_size: 1,
            ..Options::default()
        },
    )
    .await;

    let mut browser = Browser::launch_observed().await;
    // The key in the URL fragment, as autos prints it on its first start: the page keeps it and
    // sends it with every request.
    browser
        .open(&app.url(&format!("/?number={n}#key={}", app.key)))
        .await;
    browser
        .wait_for(
            "!!document.getElementById('start')",
            LOAD,
            "the page loaded",
        )
        .await;
    assert_eq!(
        browser
            .eval("document.getElementById('number').value")
            .await,
        n.as_str()
    );
    browser
        .eval("document.getElementById('start').click()")
        .await;

    let status = terminal_status(&mut browser).await;
    assert!(status.contains("COMPLETED"), "{status}");
    assert_eq!(
        browser
            .eval("document.getElementById('progress').value")
            .await,
        100
    );
    // Updates came over the subscription, in order, up to 100; the page's download link serves
    // the document.
    let progress = live_progress(&mut browser).await;
    assert!(progress.len() >= 3, "few live updates: {progress:?}");
    assert_documents_served(&mut browser, 6, 40_000).await;

    // The built-in webhook test receiver, from the page: a signed test event that verifies.
    browser
        .eval("document.getElementById('hooks-send').click()")
        .await;
    browser
        .wait_for(
            "document.querySelectorAll('#hooks li[data-valid=true]').length",
            LOAD,
            "the test event shown as verified",
        )
        .await;
    let result = browser
        .text("document.getElementById('hooks-result').textContent")
        .await;
    assert!(result.contains("200"), "{result}");

    browser.close().await;
    app.stop().await;
}

/// `/#key=…`: the page moves the key from the address into localStorage, shows its id (never
/// its secret), sends it only in headers, and works; a reload without the fragment still does.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_key_link_is_kept_and_the_page_works_with_it() {
    let court = Court::start().await;
    let n = number(78);
    slow_process(&court, &n, 4, 8_000, Duration::from_millis(60));
    let app = TestApp::spawn_with(
        court,
        Options {
            workers: 2,
            batch_size: 1,
            ..Options::default()
        },
    )
    .await;
    let (key_id, secret) = key_parts(&app.key);

    let mut browser = Browser::launch_observed().await;
    browser.open(&app.url(&format!("/#key={}", app.key))).await;
    browser
        .wait_for(
            "document.body.dataset.auth === 'key' && document.getElementById('credential').dataset.keyId",
            LOAD,
            "the page in key mode",
        )
        .await;

    // The fragment is gone from the address bar, the key is in localStorage (and nowhere else).
    assert_eq!(browser.text("location.href").await, app.url("/"));
    assert_eq!(
        browser.text("localStorage.getItem('autos.key')").await,
        app.key
    );
    assert_eq!(browser.eval("sessionStorage.length").await, 0);
    assert_eq!(
        browser
            .text("document.getElementById('credential').dataset.mode")
            .await,
        "key"
    );
    assert_eq!(
        browser
            .text("document.getElementById('credential').dataset.keyId")
            .await,
        key_id
    );
    // Who the key is, once the server said so.
    let viewer = browser
        .wait_for(
            "(v => !v.hidden && v.textContent)(document.getElementById('viewer'))",
            LOAD,
            "the key's tenant and scopes shown",
        )
        .await;
    let viewer = viewer.as_str().unwrap();
    assert!(
        viewer.contains(TENANT) && viewer.contains("write"),
        "{viewer}"
    );
    assert!(browser.visible("#credential").await);
    assert!(
        browser
            .text("document.getElementById('credential').textContent")
            .await
            .contains(&key_id),
        "the key id is not shown"
    );
    assert!(!browser.visible("#auth-message").await);
    assert!(!browser.visible("#readonly-note").await);

    // It works: a download started from the page, followed live to the end, with links.
    browser
        .eval(&format!(
            "document.getElementById('number').value = {}",
            json!(n)
        ))
        .await;
    assert!(browser.visible("#start").await);
    browser
        .eval("document.getElementById('start').click()")
        .await;
    let status = terminal_status(&mut browser).await;
    assert!(status.contains("COMPLETED"), "{status}");
    assert_eq!(
        browser
            .eval("document.getElementById('progress').value")
            .await,
        100
    );
    live_progress(&mut browser).await;
    assert_documents_served(&mut browser, 4, 40_000).await;
    let job = browser
        .text("document.getElementById('t-id').textContent")
        .await;
    assert_eq!(
        browser.text("location.href").await,
        app.url(&format!("/?job={job}"))
    );
    assert!(!page_text(&mut browser).await.contains(&secret));

    // The server: one job, of the key's tenant, started by that key.
    assert_eq!(
        jobs_in_db(&app).await,
        vec![(TENANT.to_string(), job.clone(), "COMPLETED".to_string())]
    );
    assert_eq!(
        start_audits(&app).await,
        vec![(Some(key_id.clone()), Some(n.clone()), "ok".to_string())]
    );

    // The key left the browser only in the Authorization header and the connection_init
    // payload: never in a URL.
    let urls = browser.requested_urls().await;
    assert!(
        urls.iter().any(|u| u.ends_with("/graphql")),
        "no request seen: {urls:?}"
    );
    for url in &urls {
        assert!(!url.contains(&secret), "the key in a URL: {url}");
    }
    let headers = browser.request_headers("/graphql").await;
    let bearer = format!("Bearer {}", app.key);
    assert!(
        headers
            .iter()
            .any(|h| h["Authorization"] == bearer.as_str()),
        "{headers:?}"
    );
    let sockets = sockets(&mut browser).await;
    assert!(!sockets.is_empty(), "no WebSocket");
    for (url, sent) in &sockets {
        assert_eq!(url, &format!("ws://{}/graphql", app.addr));
        assert_eq!(sent[0]["type"], "connection_init", "{sent:?}");
        assert_eq!(sent[0]["payload"]["authorization"], bearer.as_str());
    }

    // A reload, without the fragment: the key was kept, the job is still shown, the page
    // still starts downloads (a forced re-read makes a second job).
    browser.reload().await;
    browser
        .wait_for(
            "document.body.dataset.auth === 'key' && (document.getElementById('status').dataset.status || '')",
            LOAD,
            "the job shown again after a reload",
        )
        .await;
    assert_eq!(
        browser
            .text("document.getElementById('credential').dataset.keyId")
            .await,
        key_id
    );
    assert_eq!(
        browser
            .text("document.getElementById('t-id').textContent")
            .await,
        job
    );
    let status = terminal_status(&mut browser).await;
    assert!(status.contains("COMPLETED"), "{status}");
    browser
        .wait_for(
            &format!("!!document.querySelector('#recent button[data-job=\"{job}\"]')"),
            LOAD,
            "the job in the recent jobs",
        )
        .await;
    assert!(!browser.visible("#auth-message").await);
    browser
        .eval(&format!(
            "document.getElementById('number').value = {}; document.getElementById('force').checked = true",
            json!(n)
        ))
        .await;
    browser
        .eval("document.getElementById('start').click()")
        .await;
    browser
        .wait_for(
            "document.getElementById('start-result').dataset.created === 'true'",
            LOAD,
            "a new job created after the reload",
        )
        .await;
    let second = browser
        .wait_for(
            &format!(
                "(t => t !== {} && t)(document.getElementById('t-id').textContent)",
                json!(job)
            ),
            LOAD,
            "the new job shown",
        )
        .await;
    let second = second.as_str().unwrap().to_string();
    let status = terminal_status(&mut browser).await;
    assert!(status.contains("COMPLETED"), "{status}");
    assert_documents_served(&mut browser, 4, 40_000).await;
    assert!(!page_text(&mut browser).await.contains(&secret));
    assert_eq!(
        jobs_in_db(&app).await,
        vec![
            (TENANT.to_string(), job, "COMPLETED".to_string()),
            (TENANT.to_string(), second, "COMPLETED".to_string()),
        ]
    );
    let audits = start_audits(&app).await;
    assert_eq!(audits.len(), 2, "{audits:?}");
    assert!(
        audits
            .iter()
            .all(|(k, _, outcome)| k.as_deref() == Some(key_id.as_str()) && outcome == "ok"),
        "{audits:?}"
    );
    for url in browser.requested_urls().await {
        assert!(!url.contains(&secret), "the key in a URL: {url}");
    }

    browser.close().await;
    app.stop().await;
}

/// `/#token=…` in a browser that has no key: the page follows that one job live over the
/// WebSocket to the end, with its links, and offers nothing else.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_progress_link_shows_its_job_alone_live() {
    let court = Court::start().await;
    let n = number(79);
    // About three seconds of work: the page opens while the job runs.
    slow_process(&court, &n, 6, 4_000, Duration::from_millis(100));
    let app = TestApp::spawn_with(
        court,
        Options {
            workers: 2,
            batch_size: 1,
            ..Options::default()
        },
    )
    .await;
    let (_, secret) = key_parts(&app.key);

    // Chromium first, so that the job is still running when the page opens.
    let mut browser = Browser::launch_observed().await;
    let started = app.start(&n, false).await;
    assert_eq!(started["created"], true);
    let job = started["job"]["id"].as_str().unwrap().to_string();
    let (token, expires_at) = progress_token(&app, &job, 3600).await;

    browser.open(&app.url(&format!("/#token={token}"))).await;
    browser
        .wait_for(
            "document.body.dataset.auth === 'token'",
            LOAD,
            "the page in token mode",
        )
        .await;
    // The fragment is gone from the address bar (which names the job the page follows).
    assert_eq!(
        browser.text("location.href").await,
        app.url(&format!("/?job={job}"))
    );
    assert_eq!(
        browser.text("sessionStorage.getItem('autos.token')").await,
        token
    );
    assert_eq!(browser.eval("localStorage.length").await, 0);
    assert_eq!(
        browser
            .text("document.getElementById('credential').dataset.mode")
            .await,
        "token"
    );
    let shown_expiry = browser
        .text("document.getElementById('credential').dataset.expires")
        .await;
    let shown_expiry = chrono::DateTime::parse_from_rfc3339(&shown_expiry).expect("data-expires");
    let expiry = chrono::DateTime::parse_from_rfc3339(&expires_at).expect("expiresAt");
    assert!(
        (shown_expiry - expiry).num_seconds().abs() <= 1,
        "{shown_expiry} vs {expiry}"
    );

    // Only the job: no start, cancel or retry, no recent jobs, no test webhooks, no key form.
    for hidden in [
        "#start-card",
        "#start",
        "#recent-card",
        "#recent",
        "#hooks-send",
        "#cancel",
        "#retry",
        "#key-form",
        "#readonly-note",
        "#graphiql-link",
    ] {
        assert!(
            !browser.visible(hidden).await,
            "{hidden} shown with a token"
        );
    }
    assert!(browser.visible("#job").await);
    browser
        .wait_for(
            &format!(
                "document.getElementById('t-id').textContent === {}",
                json!(job)
            ),
            LOAD,
            "the token's job shown",
        )
        .await;
    assert!(
        !browser.visible("#cancel").await,
        "cancel shown with a token"
    );
    let status = terminal_status(&mut browser).await;
    assert!(status.contains("COMPLETED"), "{status}");
    assert_eq!(
        browser
            .text("document.getElementById('job-number').textContent")
            .await,
        n
    );
    assert_eq!(
        browser
            .eval("document.getElementById('progress').value")
            .await,
        100
    );
    assert_documents_served(&mut browser, 6, 40_000).await;
    for hidden in ["#start", "#recent-card", "#hooks-send", "#cancel", "#retry"] {
        assert!(
            !browser.visible(hidden).await,
            "{hidden} shown with a token"
        );
    }
    assert!(
        !browser.visible("#auth-message").await,
        "{}",
        browser
            .text("document.getElementById('auth-message').textContent")
            .await
    );

    // Live: progress events over the subscription, opened with the token in connection_init
    // (not in the URL), for this job.
    let progress = live_progress(&mut browser).await;
    assert!(progress.len() >= 2, "few live updates: {progress:?}");
    let sockets = sockets(&mut browser).await;
    assert!(!sockets.is_empty(), "no WebSocket");
    let (url, sent) = &sockets[0];
    assert_eq!(url, &format!("ws://{}/graphql", app.addr));
    assert_eq!(sent[0]["type"], "connection_init", "{sent:?}");
    assert_eq!(
        sent[0]["payload"]["authorization"],
        format!("Bearer {token}").as_str()
    );
    let subscribe = sent
        .iter()
        .find(|f| f["type"] == "subscribe")
        .expect("a subscribe frame");
    assert_eq!(subscribe["payload"]["variables"]["id"], job.as_str());
    for url in browser.requested_urls().await {
        assert!(!url.contains(&token[4..20]), "the token in a URL: {url}");
    }

    // The page never had the key; the server has still that one job, which the page did not change.
    assert!(!page_text(&mut browser).await.contains(&secret));
    assert_eq!(
        jobs_in_db(&app).await,
        vec![(TENANT.to_string(), job.clone(), "COMPLETED".to_string())]
    );
    assert_eq!(start_audits(&app).await.len(), 1);

    browser.close().await;
    app.stop().await;
}

/// An expired progress link, and one whose payload was changed to name another job: the page
/// says the link is invalid and shows no job.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_expired_or_tampered_progress_link_is_refused() {
    let court = Court::start().await;
    let (n1, n2) = (number(80), number(81));
    quick_process(&court, &n1, 2);
    quick_process(&court, &n2, 3);
    let app = TestApp::spawn(court).await;
    let job1 = app.start(&n1, false).await["job"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let job2 = app.start(&n2, false).await["job"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    for job in [&job1, &job2] {
        app.wait_terminal(job, RUN).await;
    }

    let (expired, _) = progress_token(&app, &job1, 1).await;
    // A valid token of job 1, its payload rewritten to name job 2 (same tenant), signature kept.
    let (valid, _) = progress_token(&app, &job1, 3600).await;
    let (payload, signature) = valid["apt_".len()..].split_once('.').expect("apt_{p}.{s}");
    let mut claims: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("base64url payload"))
            .expect("JSON payload");
    assert_eq!(claims["job"], job1.as_str(), "{claims}");
    claims["job"] = json!(job2);
    let tampered = format!(
        "apt_{}.{signature}",
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    // The server refuses both.
    for (what, token) in [("expired", &expired), ("tampered", &tampered)] {
        let response = client_with(token)
            .post(app.url("/graphql"))
            .json(&json!({ "query": "query($id: ID!) { job(id: $id) { id } }",
                           "variables": { "id": job2 } }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401, "{what} token");
    }

    for (what, token, shown) in [("expired", &expired, &n1), ("tampered", &tampered, &n2)] {
        let mut browser = Browser::launch().await;
        browser.open(&app.url(&format!("/#token={token}"))).await;
        let code = browser
            .wait_for(
                "(b => !b.hidden && b.dataset.code)(document.getElementById('auth-message'))",
                LOAD,
                &format!("the invalid-link message for the {what} token"),
            )
            .await;
        let code = code.as_str().unwrap();
        assert!(
            ["UNAUTHENTICATED", "INVALID_TOKEN"].contains(&code),
            "{what}: {code}"
        );
        let message = browser
            .text("document.getElementById('auth-message').textContent")
            .await;
        assert!(
            message.contains("Link expirado ou inválido"),
            "{what}: {message}"
        );
        let href = browser.text("location.href").await;
        assert!(
            !href.contains('#') && !href.contains(&token[4..20]),
            "{what}: {href}"
        );
        assert_eq!(
            browser.text("document.body.dataset.auth").await,
            "token",
            "{what}"
        );
        // No job shown: not the token's, not the one a changed payload names.
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(
            browser
                .eval("document.querySelectorAll('#documents tr').length")
                .await,
            0,
            "{what}"
        );
        assert!(!browser.visible("#status[data-status]").await, "{what}");
        let text = browser.text("document.body.innerText").await;
        assert!(!text.contains(shown.as_str()), "{what}: {text}");
        for hidden in ["#start", "#recent-card", "#hooks-send", "#job"] {
            assert!(!browser.visible(hidden).await, "{what}: {hidden} shown");
        }
        browser.close().await;
    }
    assert_eq!(jobs_in_db(&app).await.len(), 2);
    app.stop().await;
}

/// A browser with no credential: the page explains how to get a key; a pasted key makes it work.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_a_key_the_page_explains_and_takes_a_pasted_one() {
    let court = Court::start().await;
    let n = number(82);
    quick_process(&court, &n, 3);
    let app = TestApp::spawn(court).await;
    let (key_id, secret) = key_parts(&app.key);

    let mut browser = Browser::launch().await;
    browser.open(&app.url("/")).await;
    browser
        .wait_for(
            "document.getElementById('credential').dataset.mode === 'none'",
            LOAD,
            "the page without a credential",
        )
        .await;
    assert_eq!(browser.text("document.body.dataset.auth").await, "none");
    assert!(browser.visible("#auth-message").await);
    assert_eq!(
        browser
            .text("document.getElementById('auth-message').dataset.code")
            .await,
        "MISSING"
    );
    let message = browser
        .text("document.getElementById('auth-message').textContent")
        .await;
    assert!(
        message.contains("autos key create") && message.contains("#key=autos_"),
        "{message}"
    );
    assert!(browser.visible("#key-input").await);
    assert!(browser.visible("#key-use").await);
    assert!(!browser.visible("#start").await);
    assert!(!browser.visible("#logout").await);
    assert_eq!(browser.eval("localStorage.length").await, 0);

    // Something that is no key: refused by the page itself.
    browser
        .eval("document.getElementById('key-input').value = 'não é uma chave'; document.getElementById('key-use').click()")
        .await;
    browser
        .wait_for(
            "!document.getElementById('key-error').hidden",
            LOAD,
            "the key error",
        )
        .await;
    assert_eq!(
        browser
            .text("document.getElementById('credential').dataset.mode")
            .await,
        "none"
    );
    assert_eq!(browser.eval("localStorage.length").await, 0);

    // A key of the right form that the server does not know: refused by the server.
    let unknown = format!("autos_{key_id}_{}", "x".repeat(secret.len()));
    browser
        .eval(&format!(
            "document.getElementById('key-input').value = {}; document.getElementById('key-use').click()",
            json!(unknown)
        ))
        .await;
    browser
        .wait_for(
            "(b => !b.hidden && b.dataset.code === 'UNAUTHENTICATED')(document.getElementById('auth-message'))",
            LOAD,
            "the refused key said so",
        )
        .await;
    assert!(!browser.visible("#start").await);

    // The real key, pasted: kept, and the page works.
    browser
        .eval(&format!(
            "document.getElementById('key-input').value = {}; document.getElementById('key-use').click()",
            json!(app.key)
        ))
        .await;
    browser
        .wait_for(
            "(v => !v.hidden && v.textContent)(document.getElementById('viewer'))",
            LOAD,
            "the key's tenant shown",
        )
        .await;
    assert_eq!(
        browser
            .text("document.getElementById('credential').dataset.mode")
            .await,
        "key"
    );
    assert_eq!(
        browser
            .text("document.getElementById('credential').dataset.keyId")
            .await,
        key_id
    );
    assert_eq!(
        browser.text("localStorage.getItem('autos.key')").await,
        app.key
    );
    assert_eq!(
        browser
            .text("document.getElementById('key-input').value")
            .await,
        ""
    );
    assert!(!browser.visible("#auth-message").await);
    assert!(!browser.visible("#key-error").await);
    assert!(browser.visible("#start").await);
    browser
        .eval(&format!(
            "document.getElementById('number').value = {}; document.getElementById('start').click()",
            json!(n)
        ))
        .await;
    let status = terminal_status(&mut browser).await;
    assert!(status.contains("COMPLETED"), "{status}");
    assert_documents_served(&mut browser, 3, 5_000).await;
    assert!(!page_text(&mut browser).await.contains(&secret));
    let job = browser
        .text("document.getElementById('t-id').textContent")
        .await;
    assert_eq!(
        jobs_in_db(&app).await,
        vec![(TENANT.to_string(), job, "COMPLETED".to_string())]
    );
    assert_eq!(
        start_audits(&app).await,
        vec![(Some(key_id), Some(n), "ok".to_string())]
    );

    browser.close().await;
    app.stop().await;
}

/// A read key: the page shows the tenant's jobs but cannot start one, and says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_read_key_sees_jobs_and_starts_none() {
    let court = Court::start().await;
    let (n1, n2) = (number(83), number(84));
    quick_process(&court, &n1, 2);
    quick_process(&court, &n2, 2);
    let app = TestApp::spawn(court).await;
    let job = app.start(&n1, false).await["job"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    app.wait_terminal(&job, RUN).await;
    let lookups = app.court.lookups();
    let read = app.key(TENANT, &[Scope::Read]).await;
    let (read_id, read_secret) = key_parts(&read);

    let mut browser = Browser::launch().await;
    browser
        .open(&app.url(&format!("/?number={n2}#key={read}")))
        .await;
    browser
        .wait_for(
            "(n => !n.hidden)(document.getElementById('readonly-note'))",
            LOAD,
            "the read-only note",
        )
        .await;
    assert!(browser.visible("#readonly-note").await);
    assert_eq!(browser.text("document.body.dataset.auth").await, "key");
    assert_eq!(
        browser
            .text("document.getElementById('credential').dataset.keyId")
            .await,
        read_id
    );
    let viewer = browser
        .text("document.getElementById('viewer').textContent")
        .await;
    assert!(
        viewer.contains("read") && !viewer.contains("write"),
        "{viewer}"
    );
    assert_eq!(
        browser
            .eval("(b => !b || b.disabled)(document.getElementById('start'))")
            .await,
        true,
        "the start button is usable with a read key"
    );
    assert_eq!(
        browser
            .eval("document.getElementById('hooks-send').disabled")
            .await,
        true
    );
    assert_eq!(
        browser.text("location.href").await,
        app.url(&format!("/?number={n2}"))
    );

    // Reading works: the tenant's job is listed and shown, without cancel or retry.
    browser
        .wait_for(
            &format!("!!document.querySelector('#recent button[data-job=\"{job}\"]')"),
            LOAD,
            "the tenant's job in the recent jobs",
        )
        .await;
    browser
        .eval(&format!(
            "document.querySelector('#recent button[data-job=\"{job}\"]').click()"
        ))
        .await;
    let status = terminal_status(&mut browser).await;
    assert!(status.contains("COMPLETED"), "{status}");
    assert_documents_served(&mut browser, 2, 5_000).await;
    assert!(!browser.visible("#cancel").await);
    assert!(!browser.visible("#retry").await);

    // Neither a click on the disabled button nor a submitted form starts anything.
    browser
        .eval(&format!(
            "document.getElementById('number').value = {}; document.getElementById('start').click(); document.getElementById('start-form').requestSubmit()",
            json!(n2)
        ))
        .await;
    // The page says why, without asking the server.
    browser
        .wait_for(
            "(b => !b.hidden && b.dataset.code === 'FORBIDDEN')(document.getElementById('auth-message'))",
            LOAD,
            "the read-only refusal said",
        )
        .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!browser.visible("#start-result").await);
    assert!(!page_text(&mut browser).await.contains(&read_secret));
    assert_eq!(
        jobs_in_db(&app).await,
        vec![(TENANT.to_string(), job, "COMPLETED".to_string())]
    );
    assert_eq!(app.court.lookups(), lookups, "the court was asked");
    let audits = start_audits(&app).await;
    assert_eq!(audits.len(), 1, "{audits:?}");
    assert_ne!(audits[0].0.as_deref(), Some(read_id.as_str()));

    browser.close().await;
    app.stop().await;
}
