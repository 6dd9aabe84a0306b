//! Fixed-rate (open-loop) HTTP/1.1 load generator of the endpoint benchmark.
//!
//! ```text
//! endpoint-loadgen <host:port> <path> <requests-per-second> <seconds> <connections> <token-file> <body-file>
//! ```
//!
//! Request `i` is due at `start + i / rate`. Each keep-alive connection takes the next due request,
//! waits for its due time, POSTs it and reads the answer. Latency is measured from the due time,
//! not from the moment the request was written, so time spent waiting for a free connection
//! counts too (no coordinated omission, as in wrk2). Waiting is a short sleep followed by a spin
//! on the runtime, so requests leave on time to within microseconds; the generator therefore
//! keeps its own core busy. It stops by itself: after the last due request, or 10 s past the
//! planned end if the server cannot keep up.
//!
//! Prints one line: `RESULT target_rps=... achieved_rps=... p50_us=... p99_us=... ...
//! send_lag_p50_us=... send_lag_p99_us=...` (how late requests were written: when these are
//! large, the generator or a shortage of connections held the load back, not the server), and on
//! stderr how many requests took over 5 ms in each 100 ms window of the run (`4.8s:3318`): a
//! tail made of a few dense windows is a pause; one spread evenly is slow answers.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

#[derive(Default)]
struct Outcome {
    latencies_ns: Vec<u64>,
    /// How late each request was written (due time to the start of the write): the generator's
    /// own lag plus any wait for a free connection. Large values mean the load did not leave on
    /// time, so the latency above is not the server's alone.
    send_lags_ns: Vec<u64>,
    /// Requests over 5 ms, by the 100 ms window of the run they were due in.
    slow_by_window: std::collections::BTreeMap<u64, u64>,
    ok: u64,
    bad_status: u64,
    errors: u64,
}

struct Plan {
    addr: SocketAddr,
    request: Vec<u8>,
    next: AtomicU64,
    total: u64,
    start: Instant,
    interval_ns: f64,
    deadline: Instant,
}

fn invalid(message: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, message.to_owned())
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Writes `request` and reads one response (Content-Length bodies only); returns its status.
async fn exchange(stream: &mut TcpStream, request: &[u8], buf: &mut Vec<u8>) -> std::io::Result<u16> {
    stream.write_all(request).await?;
    buf.clear();
    let mut chunk = [0u8; 8192];
    loop {
        if let Some(end) = find(buf, b"\r\n\r\n") {
            let head = std::str::from_utf8(&buf[..end]).map_err(|_| invalid("response head is not UTF-8"))?;
            let mut lines = head.split("\r\n");
            let status = lines
                .next()
                .and_then(|line| line.split(' ').nth(1))
                .and_then(|code| code.parse::<u16>().ok())
                .ok_or_else(|| invalid("bad status line"))?;
            let mut length = None;
            for line in lines {
                let Some((name, value)) = line.split_once(':') else { continue };
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse::<usize>().ok();
                } else if name.eq_ignore_ascii_case("transfer-encoding") {
                    return Err(invalid("chunked responses are not supported"));
                }
            }
            let total = end + 4 + length.ok_or_else(|| invalid("response without Content-Length"))?;
            while buf.len() < total {
                let n = stream.read(&mut chunk).await?;
                if n == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            return Ok(status);
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Sleeps until about 1 ms before `due`, then spins (yielding to the runtime) until `due`.
async fn wait_until(due: Instant) {
    let now = Instant::now();
    if due > now + Duration::from_millis(2) {
        tokio::time::sleep_until((due - Duration::from_millis(1)).into()).await;
    }
    while Instant::now() < due {
        tokio::task::yield_now().await;
    }
}

async fn connect(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

async fn worker(plan: Arc<Plan>, mut stream: Option<TcpStream>) -> Outcome {
    let mut out = Outcome::default();
    let mut buf = Vec::with_capacity(16 * 1024);
    loop {
        let i = plan.next.fetch_add(1, Ordering::Relaxed);
        if i >= plan.total || Instant::now() > plan.deadline {
            break;
        }
        let due = plan.start + Duration::from_nanos((i as f64 * plan.interval_ns) as u64);
        wait_until(due).await;
        let conn = match stream.as_mut() {
            Some(conn) => conn,
            None => match connect(plan.addr).await {
                Ok(conn) => stream.insert(conn),
                Err(_) => {
                    out.errors += 1;
                    continue;
                }
            },
        };
        let send_lag = due.elapsed();
        match tokio::time::timeout(Duration::from_secs(5), exchange(conn, &plan.request, &mut buf)).await {
            Ok(Ok(status)) => {
                let latency = due.elapsed();
                out.latencies_ns.push(latency.as_nanos() as u64);
                if latency > Duration::from_millis(5) {
                    *out.slow_by_window.entry(((due - plan.start).as_millis() / 100) as u64).or_default() += 1;
                }
                out.send_lags_ns.push(send_lag.as_nanos() as u64);
                if (200..300).contains(&status) {
                    out.ok += 1;
                } else {
                    out.bad_status += 1;
                }
            }
            _ => {
                out.errors += 1;
                stream = None;
            }
        }
    }
    out
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1] / 1000
}

fn usage() -> ! {
    eprintln!("usage: endpoint-loadgen <host:port> <path> <requests-per-second> <seconds> <connections> <token-file> <body-file>");
    std::process::exit(2)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 8 {
        usage();
    }
    let addr: SocketAddr = args[1].parse().unwrap_or_else(|_| usage());
    let path = &args[2];
    let rate: f64 = args[3].parse().unwrap_or_else(|_| usage());
    let seconds: f64 = args[4].parse().unwrap_or_else(|_| usage());
    let connections: usize = args[5].parse().unwrap_or_else(|_| usage());
    let read = |p: &str| match std::fs::read_to_string(p) {
        Ok(text) => text.trim().to_owned(),
        Err(err) => {
            eprintln!("cannot read {p}: {err}");
            std::process::exit(2)
        }
    };
    let token = read(&args[6]);
    let body = read(&args[7]);
    if rate <= 0.0 || seconds <= 0.0 || connections == 0 {
        usage();
    }

    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body.as_bytes());

    let mut streams = Vec::with_capacity(connections);
    for _ in 0..connections {
        match connect(addr).await {
            Ok(stream) => streams.push(stream),
            Err(err) => {
                eprintln!("cannot connect to {addr}: {err}");
                std::process::exit(1)
            }
        }
    }

    let start = Instant::now() + Duration::from_millis(50);
    let plan = Arc::new(Plan {
        addr,
        request,
        next: AtomicU64::new(0),
        total: (rate * seconds).round() as u64,
        start,
        interval_ns: 1e9 / rate,
        deadline: start + Duration::from_secs_f64(seconds + 10.0),
    });
    let tasks: Vec<_> = streams.into_iter().map(|s| tokio::spawn(worker(Arc::clone(&plan), Some(s)))).collect();
    let mut all = Outcome::default();
    for task in tasks {
        if let Ok(out) = task.await {
            all.latencies_ns.extend(out.latencies_ns);
            all.send_lags_ns.extend(out.send_lags_ns);
            for (window, count) in out.slow_by_window {
                *all.slow_by_window.entry(window).or_default() += count;
            }
            all.ok += out.ok;
            all.bad_status += out.bad_status;
            all.errors += out.errors;
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let windows: Vec<String> = all.slow_by_window.iter().map(|(w, n)| format!("{:.1}s:{n}", *w as f64 / 10.0)).collect();
    eprintln!("requests over 5 ms by due time: {}", if windows.is_empty() { "none".to_owned() } else { windows.join(" ") });
    let mut sorted = all.latencies_ns;
    sorted.sort_unstable();
    let completed = sorted.len() as u64;
    let mut lags = all.send_lags_ns;
    lags.sort_unstable();
    println!(
        "RESULT target_rps={rate:.0} planned={} completed={completed} achieved_rps={:.1} ok={} bad_status={} errors={} \
         p50_us={} p90_us={} p99_us={} p999_us={} max_us={} send_lag_p50_us={} send_lag_p99_us={}",
        plan.total,
        completed as f64 / elapsed,
        all.ok,
        all.bad_status,
        all.errors,
        percentile(&sorted, 50.0),
        percentile(&sorted, 90.0),
        percentile(&sorted, 99.0),
        percentile(&sorted, 99.9),
        sorted.last().map_or(0, |ns| ns / 1000),
        percentile(&lags, 50.0),
        percentile(&lags, 99.0),
    );
}
