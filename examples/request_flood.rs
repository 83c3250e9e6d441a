//! A bounded load generator for `bench/metrics_rss.sh`: sends exactly `--requests`
//! POSTs of one JSON body from `--clients` keep-alive connections, then exits. An
//! example target, so that it builds with the dev-dependencies (reqwest) and needs
//! no wrk.
//!
//! usage: request_flood --url http://127.0.0.1:PORT/v1/models/m:predict
//!        --body '{"instances": [[5.1, 3.5, 1.4, 0.2]]}' [--requests 200000] [--clients 8]
//!
//! Prints `requests=N failures=F seconds=S req/s=R`; exits non-zero on any failure.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

#[tokio::main]
async fn main() {
    let mut url = String::new();
    let mut body = String::new();
    let mut requests: u64 = 200_000;
    let mut clients: u64 = 8;
    let argv: Vec<String> = std::env::args().skip(1).collect();
    for pair in argv.chunks(2) {
        let value = pair.get(1).cloned().unwrap_or_default();
        match pair[0].as_str() {
            "--url" => url = value,
            "--body" => body = value,
            "--requests" => requests = value.parse().expect("--requests"),
            "--clients" => clients = value.parse::<u64>().expect("--clients").max(1),
            other => panic!("unknown argument {other}"),
        }
    }
    assert!(
        url.starts_with("http://127.") || url.starts_with("http://localhost"),
        "--url must be a loopback URL, got {url:?}"
    );
    let client = reqwest::Client::new();
    // Requests are handed out from one counter so that exactly `requests` are sent.
    let next = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..clients)
        .map(|_| {
            let (client, url, body) = (client.clone(), url.clone(), body.clone());
            let (next, failures) = (next.clone(), failures.clone());
            tokio::spawn(async move {
                while next.fetch_add(1, Ordering::Relaxed) < requests {
                    let sent = client
                        .post(&url)
                        .header("content-type", "application/json")
                        .body(body.clone())
                        .send()
                        .await;
                    let ok = match sent {
                        Ok(r) => r.status().is_success() && r.bytes().await.is_ok(),
                        Err(_) => false,
                    };
                    if !ok {
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.await.expect("worker panicked");
    }
    let seconds = started.elapsed().as_secs_f64();
    let failed = failures.load(Ordering::Relaxed);
    println!(
        "requests={requests} failures={failed} seconds={seconds:.1} req/s={:.0}",
        requests as f64 / seconds
    );
    if failed > 0 {
        std::process::exit(1);
    }
}
