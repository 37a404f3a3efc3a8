//! The checked-in SDL is what the code produces, and it keeps the contract's names.

#[test]
fn checked_in_schema_matches_the_code() {
    let produced = autos::graphql::sdl();
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/schema.graphql");
    let checked_in = std::fs::read_to_string(path).expect("schema.graphql at the repo root");
    assert!(
        produced == checked_in,
        "schema.graphql is out of date: run `cargo run -- schema > schema.graphql` and commit it"
    );
}

#[test]
fn schema_keeps_the_contract_names() {
    let sdl = autos::graphql::sdl();
    // Collapse whitespace and descriptions so that field signatures can be found verbatim.
    let mut compact = String::new();
    let mut in_description = false;
    for line in sdl.lines() {
        let line = line.trim();
        if line == "\"\"\"" {
            in_description = !in_description;
            continue;
        }
        if in_description || (line.starts_with("\"\"\"") && line.ends_with("\"\"\"")) {
            continue;
        }
        compact.push_str(line);
        compact.push(' ');
    }
    let compact = compact.split_whitespace().collect::<Vec<_>>().join(" ");
    for signature in [
        "process(number: String!): Process",
        "job(id: ID!): DownloadJob",
        // `tenant` (admin keys only) follows the contract's four arguments.
        "jobs( first: Int, after: String, status: JobStatus, number: String, tenant: String ): DownloadJobConnection!",
        "document(id: ID!): Document",
        "startDownload(input: StartDownloadInput!): StartDownloadPayload!",
        "cancelJob(id: ID!): DownloadJob!",
        "retryFailedDocuments(jobId: ID!): DownloadJob!",
        "number: String! webhookUrl: String force: Boolean! = false",
        "job: DownloadJob! created: Boolean!",
        "enum JobStatus { QUEUED RUNNING COMPLETED COMPLETED_WITH_ERRORS FAILED CANCELLED }",
        "enum DocumentStatus { PENDING PROCESSING AVAILABLE FAILED }",
        "type DocumentCounts { pending: Int! processing: Int! available: Int! failed: Int! }",
        "downloadUrl: String",
        "downloadUrlExpiresAt: DateTime",
        "webhook: WebhookStatus",
        "type Subscription { jobProgress(jobId: ID!): JobProgress! }",
        "subscription: Subscription",
    ] {
        assert!(compact.contains(signature), "missing `{signature}` in:\n{compact}");
    }
}

/// The ready-made operations in `playground/operations/` are valid against the schema: each
/// gets past parsing and validation to the access check (run without a caller, it is refused
/// there, so nothing runs), with variables that fit.
#[tokio::test]
async fn the_sample_operations_are_valid() {
    use futures::StreamExt;
    let schema = autos::graphql::schema(None);
    let dir = std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/playground/operations"
    ));
    let mut checked = 0;
    for entry in std::fs::read_dir(dir).expect("playground/operations") {
        let path = entry.expect("entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("graphql") {
            continue;
        }
        let query = std::fs::read_to_string(&path).expect("operation");
        let variables: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(path.with_extension("variables.json"))
                .unwrap_or_else(|e| panic!("variables of {}: {e}", path.display())),
        )
        .expect("variables are JSON");
        let request = async_graphql::Request::new(query)
            .variables(async_graphql::Variables::from_json(variables));
        let response = schema
            .execute_stream(request)
            .next()
            .await
            .expect("a response");
        assert!(
            !response.errors.is_empty(),
            "{}: ran without a caller",
            path.display()
        );
        for error in &response.errors {
            let code = error
                .extensions
                .as_ref()
                .and_then(|e| e.get("code"))
                .map(|c| c.to_string());
            assert_eq!(
                code.as_deref(),
                Some("\"UNAUTHENTICATED\""),
                "{}: {error:?}",
                path.display()
            );
        }
        checked += 1;
    }
    assert!(checked >= 14, "only {checked} operations found");
}
