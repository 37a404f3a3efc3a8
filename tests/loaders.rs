//! GraphQL reads cost a fixed number of SQL statements, whatever the size of the answer:
//! statements are counted by a proxy in front of PostgreSQL.

mod common;

use autos::app::{Application, Role};
use common::pgproxy::PgProxy;
use common::*;
use futures::StreamExt;
use serde_json::{json, Value};

/// An API-only autos whose every statement passes through the counting proxy, and another one
/// on the same database, connected directly, that sets the data up.
///
/// The proxy relays each protocol message in several small writes without `TCP_NODELAY`, so
/// every statement through it waits ~40 ms on Nagle and delayed ACKs: the hundreds of
/// statements that create the jobs take the direct way.
struct CountedApi {
    app: Application,
    direct: Application,
    proxy: PgProxy,
    http: reqwest::Client,
    court: Court,
    _s3: TestS3,
    _db: TestDb,
}

impl CountedApi {
    async fn start() -> CountedApi {
        let court = Court::start().await;
        let db = TestDb::new().await;
        let s3 = TestS3::start().await;
        let proxy = PgProxy::start(&db.url).await;
        let options = Options {
            role: Role::SERVE,
            ..Options::default()
        };
        let mut cfg = config(&proxy.url(&db.url), &s3, &court.url(), &options);
        // The statements counted are the loaders': no rate limit's bookkeeping among them.
        cfg.rate_limit = 0;
        let app = Application::start(cfg, options.role)
            .await
            .expect("start autos behind the proxy");
        let direct = Application::start(config(&db.url, &s3, &court.url(), &options), options.role)
            .await
            .expect("start autos");
        let key = create_key(&db.url, TENANT, &[autos::auth::Scope::Write]).await;
        CountedApi {
            app,
            direct,
            proxy,
            http: client_with(&key),
            court,
            _s3: s3,
            _db: db,
        }
    }

    async fn data(&self, via: &Application, query: &str, variables: Value) -> Value {
        let body = post_gql(&self.http, via.addr.expect("serving"), query, variables).await;
        assert!(body.get("errors").is_none(), "unexpected errors: {body:#}");
        body["data"].clone()
    }

    async fn stop(self) {
        self.app.stop().await;
        self.direct.stop().await;
    }

    /// `data` through the proxy, and the statements it cost.
    async fn counted(&self, query: &str, variables: Value) -> (Value, u64) {
        let before = self.proxy.statements();
        let data = self.data(&self.app, query, variables).await;
        (data, self.proxy.statements() - before)
    }

    /// A case of `documents` tiny documents at the court, and a job for it; returns the job id.
    async fn job_with(&self, n: u32, documents: usize) -> String {
        let number = number(n);
        let docs = (0..documents)
            .map(|i| Doc::new(&format!("doc{i}"), &format!("peça {i}.pdf"), vec![b'x'; 16]))
            .collect();
        self.court.add_process(&number, docs);
        let started = self
            .data(
                &self.direct,
                "mutation($n: String!) { startDownload(input: {number: $n}) { created job { id total } } }",
                json!({ "n": number }),
            )
            .await;
        assert_eq!(started["startDownload"]["created"], true);
        assert_eq!(started["startDownload"]["job"]["total"], documents);
        started["startDownload"]["job"]["id"]
            .as_str()
            .unwrap()
            .to_string()
    }
}

const JOB: &str = "query($id: ID!) { job(id: $id) {
    process { number }
    documents { id name status downloadUrl }
    counts { pending processing available failed } } }";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_job_with_1000_documents_costs_as_many_statements_as_one_with_10() {
    let api = CountedApi::start().await;
    let big = api.job_with(1, 1000).await;
    let small = api.job_with(2, 10).await;

    let (data, big_cost) = api.counted(JOB, json!({ "id": big })).await;
    assert_eq!(data["job"]["documents"].as_array().unwrap().len(), 1000);
    assert_eq!(data["job"]["counts"]["pending"], 1000);
    assert_eq!(data["job"]["process"]["number"], number(1).as_str());

    let (data, small_cost) = api.counted(JOB, json!({ "id": small })).await;
    assert_eq!(data["job"]["documents"].as_array().unwrap().len(), 10);

    println!("job query: {big_cost} statements for 1000 documents, {small_cost} for 10");
    assert_eq!(
        big_cost, small_cost,
        "statements do not grow with documents"
    );
    assert!(
        (1..=5).contains(&big_cost),
        "one statement per loader: {big_cost}"
    );
    api.stop().await;
}

/// Pages of a job's documents read from where the previous one ended: walking a job of 1,000
/// in pages of 300 gives its whole list in order, each page at the same number of statements
/// whatever its depth, and an `after` that is not one of the job's documents is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pages_of_a_job_walk_its_documents_in_order_at_the_same_cost() {
    const PAGE: &str = "query($id: ID!, $first: Int!, $after: String) {
        job(id: $id) { documents(first: $first, after: $after) { id } } }";
    let ids = |data: &Value| -> Vec<String> {
        data["job"]["documents"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["id"].as_str().unwrap().to_string())
            .collect()
    };
    let api = CountedApi::start().await;
    let job = api.job_with(3, 1000).await;
    let other = api.job_with(4, 2).await;
    let whole = ids(&api.data(&api.direct, JOB, json!({ "id": job })).await);
    assert_eq!(whole.len(), 1000);

    let (mut walked, mut costs, mut after) = (Vec::new(), Vec::new(), Value::Null);
    loop {
        let (data, cost) = api
            .counted(PAGE, json!({ "id": job, "first": 300, "after": after }))
            .await;
        let page = ids(&data);
        costs.push(cost);
        let Some(last) = page.last() else { break };
        after = json!(last);
        walked.extend(page);
    }
    assert_eq!(
        walked, whole,
        "the pages give the job's documents, in order"
    );
    assert_eq!(costs.len(), 5, "four pages and an empty one: {costs:?}");
    assert!(
        costs[1..].iter().all(|c| *c == costs[1]),
        "every page after the first costs the same: {costs:?}"
    );

    let foreign = ids(&api.data(&api.direct, JOB, json!({ "id": other })).await);
    for after in [foreign[0].as_str(), "not-an-id"] {
        let body = post_gql(
            &api.http,
            api.app.addr.unwrap(),
            PAGE,
            json!({ "id": job, "first": 10, "after": after }),
        )
        .await;
        assert_eq!(
            body["errors"][0]["extensions"]["code"], "BAD_REQUEST",
            "{body:#}"
        );
    }
    api.stop().await;
}

// Pages of documents as a client asking for 100 jobs must (the cost of a page counts each
// list at its page size).
const PAGE: &str = "query($first: Int!) { jobs(first: $first) { nodes {
    id
    process { number latestJob { id } documents(first: 10) { id } }
    documents(first: 10) { id } } } }";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_page_of_100_jobs_with_their_processes_costs_as_many_statements_as_a_page_of_5() {
    let api = CountedApi::start().await;
    let started = futures::stream::iter(1..=100u32)
        .map(|n| {
            let api = &api;
            async move { api.job_with(1000 + n, 3).await }
        })
        .buffer_unordered(8)
        .collect::<Vec<String>>()
        .await;
    assert_eq!(started.len(), 100);

    let (data, cost_5) = api.counted(PAGE, json!({ "first": 5 })).await;
    assert_eq!(data["jobs"]["nodes"].as_array().unwrap().len(), 5);
    assert!(
        (1..=5).contains(&cost_5),
        "one statement for the page and one per loader: {cost_5}"
    );

    // Batching must not depend on luck: ask ten times.
    let mut costs_100 = Vec::new();
    for _ in 0..10 {
        let (data, cost) = api.counted(PAGE, json!({ "first": 100 })).await;
        let nodes = data["jobs"]["nodes"].as_array().unwrap();
        assert_eq!(nodes.len(), 100);
        for node in nodes {
            assert_eq!(node["documents"].as_array().unwrap().len(), 3, "{node:#}");
            let process = &node["process"];
            assert_eq!(process["documents"].as_array().unwrap().len(), 3);
            assert_eq!(
                process["latestJob"]["id"], node["id"],
                "one job per process"
            );
        }
        costs_100.push(cost);
    }

    println!("jobs page: {costs_100:?} statements for 100 jobs (10 runs), {cost_5} for 5");
    assert!(
        costs_100.iter().all(|&c| c == cost_5),
        "a page of 100 jobs costs what a page of 5 does ({cost_5} statements), every time: {costs_100:?}"
    );
    api.stop().await;
}
