//! Proxy overhead against a direct connection, for small requests (issue 14 targets: p50 added
//! latency <= 0.2 ms, throughput >= 80 % of direct).
//!
//! An upstream (hyper's HTTP/1 server on smol answering `ok`) runs on its own thread, the proxy on
//! another; clients are plain blocking sockets with keep-alive on their own threads. Measured:
//! - latency: one connection each, sequential GETs, direct and through the proxy in turn;
//! - throughput: `CONNS` connections, each sending GETs back to back, `SECS` seconds per path in
//!   slices of `SLICE_MS` taking turns (so that other load on the machine weighs on all paths
//!   alike): direct, through the proxy, through a byte relay that parses nothing, and through a
//!   turn-taking relay (waits for a request, forwards it, waits for the answer, forwards it: the
//!   ceiling of any proxy parsing HTTP/1 in the client connection's task); with the CPU time per
//!   request of the clients, the upstream and the proxy (or relay) threads, read from /proc
//!   (10 ms ticks: meaningful summed over seconds), and how busy the machine's cores were.
//!
//! `cargo bench -p proxy --bench overhead` (CONNS, SECS, SLICE_MS, REQS in the environment
//! override; WORK_US makes the service spin that long per request; ONLY=direct|proxied|relay|turns loops over one path, for `perf`). Run by
//! `cargo test --all-targets` (no `--bench` argument, unoptimised) it only checks that every path
//! answers.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use http_body_util::Full;
use hyper::body::Bytes;
use proxy::{BoxFuture, Lookup, Proxy, Routes};

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct One(SocketAddr);

impl Routes for One {
    fn lookup<'a>(&'a self, _host: &'a str) -> BoxFuture<'a, Lookup> {
        let l = Lookup::Ready {
            service: "api".into(),
            upstreams: vec![self.0],
        };
        Box::pin(async move { l })
    }
}

/// The service: answers `ok`, after spinning `work` of wall-clock time per request (`WORK_US`,
/// default 0: a service that does nothing, the worst case for a proxy's ratio).
fn upstream(work: Duration) -> SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    // Its own executor on its own thread, as a service is its own process: it must not share the
    // proxy's (smol's global) executor.
    spawn_named("upstream", move || {
        let ex = smol::LocalExecutor::new();
        smol::block_on(ex.run(async {
            let l = async_net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(l.local_addr().unwrap()).unwrap();
            loop {
                let (s, _) = l.accept().await.unwrap();
                let _ = s.set_nodelay(true);
                ex.spawn(async move {
                    let svc = hyper::service::service_fn(move |_req| async move {
                        let t = Instant::now();
                        while t.elapsed() < work {
                            std::hint::spin_loop();
                        }
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                            Bytes::from_static(b"ok"),
                        )))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(smol_hyper::rt::FuturesIo::new(s), svc)
                        .await;
                })
                .detach();
            }
        }))
    });
    rx.recv().unwrap()
}

fn proxy_to(up: SocketAddr) -> SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    spawn_named("proxy-main", move || {
        smol::block_on(async move {
            let p = Proxy::bind("127.0.0.1:0".parse().unwrap(), Arc::new(One(up)))
                .await
                .unwrap();
            tx.send(p.local_addr()).unwrap();
            std::future::pending::<()>().await;
        })
    });
    rx.recv().unwrap()
}

/// The floor of any proxy, for reference: a TCP relay on the same executor that parses nothing and
/// copies bytes both ways (one upstream connection per client connection).
fn relay_to(up: SocketAddr) -> SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    spawn_named("relay-main", move || {
        smol::block_on(async move {
            let l = async_net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(l.local_addr().unwrap()).unwrap();
            loop {
                let (c, _) = l.accept().await.unwrap();
                smol::spawn(async move {
                    let u = async_net::TcpStream::connect(up).await.unwrap();
                    let _ = c.set_nodelay(true);
                    let _ = u.set_nodelay(true);
                    let (mut cw, mut uw) = (c.clone(), u.clone());
                    let _ = futures_lite::future::zip(
                        futures_lite::io::copy(c, &mut uw),
                        futures_lite::io::copy(u, &mut cw),
                    )
                    .await;
                })
                .detach();
            }
        })
    });
    rx.recv().unwrap()
}

/// The ceiling of a proxy that parses HTTP/1 in the client connection's task: a relay that
/// knows requests and answers take turns (small ones, one read each), so it never reads a socket
/// speculatively: it waits for the client's request, writes it to the upstream, waits for the
/// answer, writes it back. Parses nothing; only valid for this bench's traffic.
fn turns_to(up: SocketAddr) -> SocketAddr {
    use async_io::Async;
    use std::io::{Read as _, Write as _};
    let (tx, rx) = std::sync::mpsc::channel();
    spawn_named("turns-main", move || {
        smol::block_on(async move {
            let l = async_net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(l.local_addr().unwrap()).unwrap();
            loop {
                let (c, _) = l.accept().await.unwrap();
                smol::spawn(async move {
                    let u = async_net::TcpStream::connect(up).await.unwrap();
                    let _ = c.set_nodelay(true);
                    let _ = u.set_nodelay(true);
                    let c: Arc<Async<TcpStream>> = c.into();
                    let u: Arc<Async<TcpStream>> = u.into();
                    let mut buf = vec![0u8; 16384];
                    loop {
                        for (from, to) in [(&c, &u), (&u, &c)] {
                            if from.readable().await.is_err() {
                                return;
                            }
                            let n = match from.read_with(|s| (&*s).read(&mut buf)).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => n,
                            };
                            if to.write_with(|s| (&*s).write_all(&buf[..n])).await.is_err() {
                                return;
                            }
                        }
                    }
                })
                .detach();
            }
        })
    });
    rx.recv().unwrap()
}

/// A keep-alive client: one GET, reads the whole response.
struct Client {
    w: TcpStream,
    r: BufReader<TcpStream>,
    line: String,
}

impl Client {
    fn new(addr: SocketAddr) -> Client {
        let w = TcpStream::connect(addr).unwrap();
        w.set_nodelay(true).unwrap();
        let r = BufReader::new(w.try_clone().unwrap());
        Client {
            w,
            r,
            line: String::new(),
        }
    }

    fn get(&mut self) {
        self.w
            .write_all(b"GET / HTTP/1.1\r\nHost: api.localhost\r\n\r\n")
            .unwrap();
        let mut len = 0usize;
        let mut first = true;
        loop {
            self.line.clear();
            self.r.read_line(&mut self.line).unwrap();
            if first {
                assert!(self.line.starts_with("HTTP/1.1 200"), "{}", self.line);
                first = false;
            }
            if self.line == "\r\n" {
                break;
            }
            if let Some(v) = self
                .line
                .to_ascii_lowercase()
                .strip_prefix("content-length:")
            {
                len = v.trim().parse().unwrap();
            }
        }
        let mut body = [0u8; 64];
        self.r.read_exact(&mut body[..len]).unwrap();
    }
}

/// p50 and p99 of `n` sequential GETs on one connection to each of `addrs`, taking turns (one
/// request to each in a row) so that a change of load on the machine weighs on all alike.
fn latency(addrs: &[SocketAddr], n: u64) -> Vec<(Duration, Duration)> {
    let mut clients: Vec<Client> = addrs.iter().map(|a| Client::new(*a)).collect();
    for c in &mut clients {
        for _ in 0..200 {
            c.get();
        }
    }
    let mut times = vec![Vec::with_capacity(n as usize); clients.len()];
    for _ in 0..n {
        for (c, t) in clients.iter_mut().zip(&mut times) {
            let start = Instant::now();
            c.get();
            t.push(start.elapsed());
        }
    }
    times
        .into_iter()
        .map(|mut t| {
            t.sort();
            (t[t.len() / 2], t[t.len() * 99 / 100])
        })
        .collect()
}

fn spawn_named<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .unwrap()
}

/// CPU time (user + system, in clock ticks) used so far by this process's threads, by group:
/// the clients, the upstream, the proxy (smol's executor threads) and the rest.
fn cpu_ticks() -> [u64; 4] {
    let mut t = [0u64; 4];
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return t;
    };
    for task in dir.flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let comm = &stat[open + 1..close];
        // After ") ": state is field 3; utime and stime are fields 14 and 15.
        let f: Vec<&str> = stat[close + 2..].split(' ').collect();
        let ticks: u64 = f[11].parse::<u64>().unwrap_or(0) + f[12].parse::<u64>().unwrap_or(0);
        let group = match comm {
            "client" => 0,
            "upstream" => 1,
            c if c.starts_with("smol-") => 2,
            _ => 3,
        };
        t[group] += ticks;
    }
    t
}

/// Requests done, seconds, CPU ticks of this process's thread groups, and (busy, total) ticks of
/// all cores, summed over the slices of one path.
#[derive(Default)]
struct Tally {
    n: u64,
    secs: f64,
    cpu: [u64; 4],
    sys: (u64, u64),
}

impl Tally {
    fn run(&self) -> Run {
        // Clock ticks are 10 ms on Linux (USER_HZ = 100).
        let per = |g: usize| self.cpu[g] as f64 * 10_000.0 / self.n.max(1) as f64;
        let all = self.sys.1.max(1) as f64;
        Run {
            rate: self.n as f64 / self.secs,
            cpu: [per(0), per(1), per(2), per(3)],
            busy: (
                self.sys.0 as f64 * 100.0 / all,
                self.cpu.iter().sum::<u64>() as f64 * 100.0 / all,
            ),
        }
    }
}

/// `conns` connections to `addr`, each sending GETs back to back for `dur`; adds what was done and
/// the CPU used (from /proc, 10 ms ticks: meaningful summed over seconds) to `tally`.
fn throughput(addr: SocketAddr, conns: u64, dur: Duration, tally: &mut Tally) {
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..conns)
        .map(|_| {
            let (stop, count) = (stop.clone(), count.clone());
            spawn_named("client", move || {
                let mut c = Client::new(addr);
                while !stop.load(Ordering::Relaxed) {
                    c.get();
                    count.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    // Let every client connect and send its first request before counting.
    std::thread::sleep(Duration::from_millis(20));
    let n0 = count.load(Ordering::Relaxed);
    let t = Instant::now();
    let cpu0 = cpu_ticks();
    let sys0 = sys_ticks();
    std::thread::sleep(dur);
    let cpu1 = cpu_ticks();
    let sys1 = sys_ticks();
    let n = count.load(Ordering::Relaxed) - n0;
    let el = t.elapsed();
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    tally.n += n;
    tally.secs += el.as_secs_f64();
    for g in 0..4 {
        tally.cpu[g] += cpu1[g] - cpu0[g];
    }
    tally.sys.0 += sys1.0 - sys0.0;
    tally.sys.1 += sys1.1 - sys0.1;
}

/// One throughput run's numbers.
struct Run {
    rate: f64,
    /// CPU microseconds per request: clients, upstream, proxy (smol's threads), the rest.
    cpu: [f64; 4],
    /// Share of all cores busy (any process), and used by this process, in percent.
    busy: (f64, f64),
}

impl Run {
    /// CPU per request of everything in this process.
    fn total(&self) -> f64 {
        self.cpu.iter().sum()
    }
}

fn print_run(name: &str, r: &Run, direct: &Run) {
    println!(
        "  {name:<8}{:>9.0} req/s {:>5.1} %  CPU us/req: clients {:>5.1}  upstream {:>5.1}  proxy {:>5.1}  total {:>5.1}  (cores busy {:.0} %, this bench {:.0} %)",
        r.rate,
        r.rate / direct.rate * 100.0,
        r.cpu[0],
        r.cpu[1],
        r.cpu[2],
        r.total(),
        r.busy.0,
        r.busy.1,
    );
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` (tests/run.sh) runs this binary
    // unoptimised without it: then only check that every path answers, and print no timings (a
    // debug build's numbers say nothing about the targets).
    if !std::env::args().any(|a| a == "--bench") {
        let up = upstream(Duration::ZERO);
        for addr in [up, proxy_to(up), relay_to(up), turns_to(up)] {
            let mut c = Client::new(addr);
            for _ in 0..20 {
                c.get();
            }
        }
        println!(
            "proxy overhead bench: smoke run only (timings need `cargo bench -p proxy --bench overhead`)"
        );
        return;
    }
    let (reqs, conns, secs) = (env("REQS", 5000), env("CONNS", 8), env("SECS", 5));
    let slice = Duration::from_millis(env("SLICE_MS", 500));
    let work = Duration::from_micros(env("WORK_US", 0));
    let up = upstream(work);
    if !work.is_zero() {
        println!("the service spins {} us per request", work.as_micros());
    }
    let px = proxy_to(up);
    let relay = relay_to(up);
    let turns = turns_to(up);
    // ONLY=direct|proxied|relay|turns: that one, in a loop (for perf and strace).
    if let Ok(only) = std::env::var("ONLY") {
        let addr = match only.as_str() {
            "direct" => up,
            "proxied" => px,
            "relay" => relay,
            _ => turns,
        };
        loop {
            let mut t = Tally::default();
            throughput(addr, conns, Duration::from_secs(secs), &mut t);
            print_run(&only, &t.run(), &t.run());
        }
    }
    let lat = latency(&[up, px], reqs);
    let ((d50, d99), (p50, p99)) = (lat[0], lat[1]);
    println!("latency, 1 connection each, {reqs} sequential GETs, direct and proxied in turn:");
    println!("  direct  p50 {:>7.1} us  p99 {:>7.1} us", us(d50), us(d99));
    println!("  proxied p50 {:>7.1} us  p99 {:>7.1} us", us(p50), us(p99));
    println!(
        "  added   p50 {:>7.1} us (target <= 200 us)",
        us(p50) - us(d50)
    );
    // The paths take turns in slices, so that a change of load on the (shared) machine weighs on
    // all of them alike.
    let paths = [up, px, relay, turns];
    let mut tallies: [Tally; 4] = Default::default();
    let slices = (Duration::from_secs(secs).as_millis() / slice.as_millis().max(1)).max(1);
    for _ in 0..slices {
        for (addr, tally) in paths.iter().zip(&mut tallies) {
            throughput(*addr, conns, slice, tally);
        }
    }
    let [direct, proxied, relayed, turned] = tallies.map(|t| t.run());
    println!(
        "throughput, {conns} connections, {secs} s each in slices of {} ms taking turns (% of direct):",
        slice.as_millis()
    );
    print_run("direct", &direct, &direct);
    print_run("proxied", &proxied, &direct);
    print_run("relay", &relayed, &direct);
    print_run("turns", &turned, &direct);
    println!(
        "  ratio   {:>9.1} % (target >= 80 %); CPU per request direct / proxied {:.1} %; \
         byte relay {:.1} %, turn-taking relay {:.1} %",
        proxied.rate / direct.rate * 100.0,
        direct.total() / proxied.total() * 100.0,
        relayed.rate / direct.rate * 100.0,
        turned.rate / direct.rate * 100.0,
    );
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// Busy and total clock ticks of all cores, from /proc/stat (busy: all but idle and iowait).
fn sys_ticks() -> (u64, u64) {
    let s = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let f: Vec<u64> = s
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = f.iter().take(8).sum();
    let idle = f.get(3).copied().unwrap_or(0) + f.get(4).copied().unwrap_or(0);
    (total - idle, total)
}
