//! Baseline for the endpoint benchmark (`bench/endpoint.sh`): an actix-web server that answers
//! `POST /api/messages` with 200 and an empty body, doing no other work.
//!
//! It starts the way `chatwarden serve` does (a `#[tokio::main]` runtime and `HttpServer` with
//! actix's default worker count, which follows the CPU affinity of the process), so pinned to the
//! same core both servers run the same number of workers. The request body is read and dropped,
//! as any server must read it before answering on a kept-alive connection.
//!
//! Usage: `bare_actix <port>` (listens on 127.0.0.1).

use actix_web::{App, HttpResponse, HttpServer, web};

async fn messages(_body: web::Bytes) -> HttpResponse {
    HttpResponse::Ok().finish()
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let port: u16 = match std::env::args().nth(1).map(|arg| arg.parse()) {
        Some(Ok(port)) => port,
        _ => {
            eprintln!("usage: bare_actix <port>");
            std::process::exit(2);
        }
    };
    HttpServer::new(|| App::new().route("/api/messages", web::post().to(messages))).bind(("127.0.0.1", port))?.run().await
}
