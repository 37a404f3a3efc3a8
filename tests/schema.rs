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
        "jobs( first: Int, after: String, status: JobStatus, number: String ): DownloadJobConnection!",
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
