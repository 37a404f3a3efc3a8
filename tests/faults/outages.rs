//! S3 or the court goes down in the middle of a job, with the default download settings
//! (three attempts, a first backoff of a second): far longer than the attempts would last, yet
//! nothing fails and nothing is charged. While it lasts, `/readyz`, the job's `waitingFor` and
//! its subscribers say what the work waits for, and the documents it cut wait, PENDING; once
//! the dependency answers again, a probe finds out and the job completes. The court is asked
//! for no more than the transfers the outage cut (and, S3 being down, the breaker's few
//! probes).

use super::*;
use autos::jobs::outage::{FIRST_WAIT, MAX_WAIT, OPEN_AFTER};
use common::proxy::Proxy;
use common::ws::{Protocol, WsClient};

/// Documents of the case, and of them how many transfers run at once (the workers).
const DOCUMENTS: usize = 16;
const WORKERS: u32 = 4;

const PROGRESS: &str = "subscription($id: ID!) { jobProgress(jobId: $id) {
    status progress waitingFor { dependency since reason } } }";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Dependency {
    Storage,
    Source,
}

impl Dependency {
    /// As `/readyz` names it.
    fn name(self) -> &'static str {
        match self {
            Dependency::Storage => "storage",
            Dependency::Source => "source",
        }
    }

    /// As GraphQL names it.
    fn graphql(self) -> &'static str {
        match self {
            Dependency::Storage => "STORAGE",
            Dependency::Source => "SOURCE",
        }
    }

    /// A waiting document's `lastError`.
    fn waiting(self) -> &'static str {
        match self {
            Dependency::Storage => "waiting: the storage (S3) is unreachable",
            Dependency::Source => "waiting: the court source is unreachable",
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_seconds_without_s3_cost_no_attempt() {
    through_an_outage(Dependency::Storage, Duration::from_secs(20), 1601).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_seconds_without_the_court_cost_no_attempt() {
    through_an_outage(Dependency::Source, Duration::from_secs(20), 1602).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_minutes_without_the_court_cost_no_attempt() {
    through_an_outage(Dependency::Source, Duration::from_secs(120), 1603).await;
}

/// Probes an open breaker lets through (and sees fail) within `outage`: the first after a
/// second, then at waits doubling to a minute.
fn probes_within(outage: Duration) -> u32 {
    let (mut at, mut wait, mut probes) = (Duration::ZERO, FIRST_WAIT, 0);
    while at + wait <= outage {
        at += wait;
        wait = (wait * 2).min(MAX_WAIT);
        probes += 1;
    }
    probes
}

async fn through_an_outage(down: Dependency, outage: Duration, case: u32) {
    let court = Court::start().await;
    let n = number(case);
    // Four rounds of four transfers of a second each.
    let docs = slow_case(&court, &n, DOCUMENTS, 64 * 1024, Duration::from_secs(1));
    let (db, s3) = (TestDb::new().await, TestS3::start().await);
    let s3_proxy = Proxy::to_url(s3.endpoint()).await;
    let to_s3 = s3_proxy.url(s3.endpoint());
    // The defaults: attempts and backoff that an outage of seconds would exhaust.
    let defaults = autos::config::Config::defaults();
    let options = Options {
        workers: WORKERS,
        max_attempts: defaults.download_max_attempts,
        backoff_ms: defaults.download_backoff_ms,
        ..Options::default()
    };
    assert_eq!((options.max_attempts, options.backoff_ms), (3, 1000));
    let app = TestApp::spawn_on(court, db, s3, options, |c| {
        c.s3_endpoint = Some(to_s3.parse().expect("proxy url"));
    })
    .await;
    let pool = app.db.pool().await;

    let id = job_id(&app.start(&n, false).await);
    let mut subscriber = WsClient::connect(app.addr, Protocol::TransportWs, &app.key).await;
    subscriber
        .subscribe("1", PROGRESS, json!({ "id": id }))
        .await;
    let followed = tokio::spawn(async move {
        subscriber
            .outcome("1", WAIT + Duration::from_secs(180))
            .await
    });

    // Mid-job: some documents stored, four transfers under way.
    let deadline = Deadline::after(WAIT, "four documents stored and four under way");
    loop {
        let stored = counted(&pool, &id, "AVAILABLE").await;
        if stored >= 4 && app.court.slow_sending_now() == 4 {
            break;
        }
        deadline.check((stored, app.court.slow_sending_now())).await;
    }
    let fell = Instant::now();
    match down {
        Dependency::Storage => {
            s3_proxy.down().await;
        }
        Dependency::Source => {
            app.court.go_down().await;
        }
    }

    // While it lasts, everyone can tell what the work waits for, and nothing is charged.
    let deadline = Deadline::after(
        outage / 2,
        "the outage seen by /readyz, waitingFor and a waiting document",
    )
    .every(Duration::from_millis(250));
    loop {
        let (status, ready) = readyz(app.addr).await;
        let waiting = waiting_for(&app, &id).await;
        let now = rows(&pool, &id).await;
        for r in &now {
            assert_ne!(r.status, "FAILED", "{r:#?}");
            let charged = i32::from(r.status == "AVAILABLE");
            assert_eq!(
                r.attempts, charged,
                "nothing charged but stored documents: {r:#?}"
            );
        }
        let stated = match down {
            Dependency::Storage => status == 503 && ready["storage"] == false,
            Dependency::Source => status == 200 && ready["storage"] == true,
        };
        let reported = ready["database"] == true
            && outages_of(&ready) == [down.name()]
            && waiting == [down.graphql()];
        let told = now
            .iter()
            .any(|r| r.status == "PENDING" && r.last_error.as_deref() == Some(down.waiting()));
        if stated && reported && told {
            break;
        }
        deadline.check((status, ready, waiting, now)).await;
    }
    tokio::time::sleep(outage.saturating_sub(fell.elapsed())).await;
    match down {
        Dependency::Storage => s3_proxy.restore().await,
        Dependency::Source => app.court.come_back().await,
    }

    // A probe finds it back: the job completes, and nobody is told of an outage any more.
    let rows = completed(&app, &id, &n, &docs).await;
    for r in &rows {
        assert_eq!(r.interruptions, 0, "{r:#?}");
        assert!(r.last_error.is_none(), "stored: no error left: {r:#?}");
    }
    let (status, ready) = readyz(app.addr).await;
    assert_eq!(status, 200, "{ready:#}");
    assert_eq!(outages_of(&ready), Vec::<String>::new(), "{ready:#}");
    assert_eq!(waiting_for(&app, &id).await, Vec::<String>::new());

    let fetched = gets(&app.court, &n, &docs);
    let again: u32 = fetched.iter().sum::<u32>() - DOCUMENTS as u32;
    match down {
        // Refused connections never reach the court: only the transfers cut were fetched
        // again.
        Dependency::Source => {
            assert!(
                fetched.iter().all(|&g| (1..=2).contains(&g)) && again <= WORKERS,
                "{WORKERS} transfers at most were cut, each fetched again once: {fetched:?}"
            );
        }
        // The court answers throughout; S3 fails each transfer after it: those under way when
        // it fell, those started before the breaker opened (a lane's worth at most), and one
        // per probe.
        Dependency::Storage => {
            let bound = 2 * WORKERS + OPEN_AFTER + probes_within(outage);
            assert!(
                fetched.iter().all(|&g| g >= 1) && again <= bound,
                "{again} documents fetched again, {bound} at most: {fetched:?}"
            );
        }
    }

    let followed = followed.await.expect("subscriber");
    let statuses: Vec<&Value> = followed
        .payloads
        .iter()
        .map(|p| &p["data"]["jobProgress"])
        .collect();
    assert!(
        statuses
            .iter()
            .any(|p| p["waitingFor"][0]["dependency"] == down.graphql() && p["status"] == "RUNNING"),
        "the subscriber was told what the job waited for: {statuses:#?}"
    );
    let last = statuses.last().expect("messages");
    assert_eq!(last["status"], "COMPLETED", "{statuses:#?}");
    assert_eq!(last["waitingFor"], json!([]), "{statuses:#?}");
    pool.close().await;
    app.stop().await;
}
