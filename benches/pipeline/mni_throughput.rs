//! `throughput-mni`: N documents of S bytes read from an MNI court (inline base64, one
//! `consultarProcesso` per document after the listing) into S3, through autos (API and workers
//! in this process), against a plain loop in this process doing the same calls and PUTs with
//! the same concurrency: POST, read the whole answer, decode its `conteudo`, PUT. Same run,
//! alternating who goes first.

use super::mni::{MniCourt, MniDoc, MniProcess};
use super::{
    authorize, config, drop_database, fresh_database, plain_storage, run_job, start_court, KEY,
    SECRET,
};
use autos::app::{Application, Role};
use autos::embedded::s3::EmbeddedS3;
use base64::Engine;
use futures::StreamExt;
use std::time::{Duration, Instant};

const WORKERS: usize = 4;
const NUMBER: &str = "0000832-35.2018.4.01.3202";

pub(crate) async fn run(admin: &str, count: usize, size: usize, rounds: usize) {
    let s3_dir =
        std::env::temp_dir().join(format!("autos-bench-s3-{}", uuid::Uuid::new_v4().simple()));
    let s3 = EmbeddedS3::start(&s3_dir, "127.0.0.1:0".parse().unwrap(), KEY, SECRET)
        .await
        .unwrap();
    let mni = MniCourt::start().await;
    let docs = (0..count)
        .map(|i| {
            let bytes: Vec<u8> = (0..size).map(|b| (b * 31 + i * 7) as u8).collect();
            let mut doc = MniDoc::new(&format!("{i}"), &format!("Documento {i}"), bytes);
            doc.md5 = false;
            doc
        })
        .collect();
    mni.add_process(NUMBER, MniProcess::new(docs));
    let sources = s3_dir.with_extension("sources.toml");
    std::fs::write(
        &sources,
        format!(
            "[[source]]\nname = \"trf1\"\ncourts = [\"4.01\"]\nurl = \"{}\"\nrate_per_minute = 1000000\n",
            mni.url()
        ),
    )
    .unwrap();
    let (court, _) = start_court("0000001-00.2024.8.26.0100", 0, 1).await;
    let storage = plain_storage(s3.endpoint()).await;
    println!("throughput-mni: {count} documents of {size} bytes as inline base64, {WORKERS} workers, {rounds} rounds");
    println!("| round | plain loop (s) | autos (s) | ratio |");
    println!("|---|---|---|---|");
    let mut ratios = Vec::new();
    for round in 1..=rounds {
        let plain_first = round % 2 == 1;
        let mut plain = Duration::ZERO;
        let mut autos = Duration::ZERO;
        for which in if plain_first { [0, 1] } else { [1, 0] } {
            if which == 0 {
                let bucket = format!("mni-r{round}-plain");
                storage
                    .client()
                    .create_bucket()
                    .bucket(&bucket)
                    .send()
                    .await
                    .unwrap();
                plain = plain_loop(&mni.endpoint(), count, &storage, &bucket).await;
                let _ = std::fs::remove_dir_all(s3_dir.join(&bucket));
            } else {
                let db = fresh_database(admin).await;
                let mut cfg = config(&db, s3.endpoint(), &court, WORKERS as u32);
                cfg.sources_file = Some(sources.clone());
                cfg.s3_bucket = format!("mni-r{round}-autos");
                let app = Application::start(cfg, Role::ALL).await.unwrap();
                let addr = app.addr.unwrap().to_string();
                authorize(&db).await;
                let (took, job) = run_job(&addr, NUMBER).await;
                assert_eq!(job["status"], "COMPLETED", "{job}");
                autos = took;
                app.stop().await;
                drop_database(admin, &db).await;
                let _ = std::fs::remove_dir_all(s3_dir.join(format!("mni-r{round}-autos")));
            }
        }
        let ratio = autos.as_secs_f64() / plain.as_secs_f64();
        ratios.push(ratio);
        println!(
            "| {round} | {:.2} | {:.2} | {ratio:.3} |",
            plain.as_secs_f64(),
            autos.as_secs_f64()
        );
    }
    ratios.sort_by(f64::total_cmp);
    println!(
        "throughput-mni: autos / plain loop, median of {rounds}: {:.3} (range {:.3}–{:.3})",
        ratios[ratios.len() / 2],
        ratios[0],
        ratios[ratios.len() - 1]
    );
    s3.shutdown();
    let _ = std::fs::remove_dir_all(&s3_dir);
    let _ = std::fs::remove_file(&sources);
}

/// The floor: the same content calls and PUTs, `WORKERS` at once, nothing else.
async fn plain_loop(
    endpoint: &str,
    count: usize,
    storage: &autos::storage::Storage,
    bucket: &str,
) -> Duration {
    let http = reqwest::Client::new();
    let digits: String = NUMBER.chars().filter(char::is_ascii_digit).collect();
    let started = Instant::now();
    futures::stream::iter(0..count)
        .map(|i| {
            let http = http.clone();
            let digits = digits.clone();
            async move {
                let envelope = format!(
                    r#"<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:ser="http://www.cnj.jus.br/servico-intercomunicacao-2.2.2/" xmlns:tip="http://www.cnj.jus.br/tipos-servico-intercomunicacao-2.2.2"><soapenv:Body><ser:consultarProcesso><tip:numeroProcesso>{digits}</tip:numeroProcesso><tip:movimentos>false</tip:movimentos><tip:documento>{i}</tip:documento></ser:consultarProcesso></soapenv:Body></soapenv:Envelope>"#
                );
                let answer = http
                    .post(endpoint)
                    .header("content-type", "text/xml; charset=UTF-8")
                    .header(
                        "SOAPAction",
                        "\"http://www.cnj.jus.br/servico-intercomunicacao-2.2.2/consultarProcesso\"",
                    )
                    .body(envelope)
                    .send()
                    .await
                    .unwrap()
                    .bytes()
                    .await
                    .unwrap();
                let text = std::str::from_utf8(&answer).unwrap();
                let open = text.find("conteudo>").unwrap() + "conteudo>".len();
                let close = open + text[open..].find('<').unwrap();
                let compact: String = text[open..close]
                    .chars()
                    .filter(|c| !c.is_ascii_whitespace())
                    .collect();
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(compact)
                    .unwrap();
                storage
                    .client()
                    .put_object()
                    .bucket(bucket)
                    .key(format!("processos/{NUMBER}/documentos/{i}/Documento {i}.pdf"))
                    .content_type("application/pdf")
                    .body(bytes.into())
                    .send()
                    .await
                    .expect("plain upload");
            }
        })
        .buffer_unordered(WORKERS)
        .collect::<Vec<()>>()
        .await;
    started.elapsed()
}
