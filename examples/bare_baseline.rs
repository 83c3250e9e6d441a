//! Bench-only: the ceiling for any HTTP server on this machine. A minimal hyper
//! HTTP/1.1 server on the same Tokio runtime ferroserve uses, that reads the
//! request body and answers a fixed JSON body the size of a one-row iris
//! prediction. No routing, no parsing, no model. Used by `bench/run.sh`.
//!
//! `cargo run --release --example bare_baseline -- 127.0.0.1:18300`

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};

/// What ferroserve answers to `{"instances": [[5.1, 3.5, 1.4, 0.2]]}` on
/// `/v1/models/iris_lr:predict`, byte for byte in size.
const BODY: &[u8] = br#"{"predictions":[{"label":0,"probabilities":[0.9792231917381287,0.020776811987161636,2.6985434331550096e-8]}]}"#;

async fn answer(request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    // Read the body as a real server must.
    let _ = request.into_body().collect().await;
    Ok(Response::builder()
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(BODY)))
        .expect("static response"))
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:18300".into())
        .parse()
        .expect("usage: bare_baseline HOST:PORT");
    let listener = tokio::net::TcpListener::bind(addr).await?;
    eprintln!("bare baseline listening on {addr}");
    loop {
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        tokio::spawn(async move {
            let service = hyper::service::service_fn(answer);
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
