//! `harness exec SERVICE -- CMD...`: run a command in a service's context; its exit code is ours.
//!
//! The command streams (`exec` with `stream`, see docs/protocol.md): output is written as it
//! comes, stdin is forwarded with `exec.input` (each chunk waits for the previous one's answer, so
//! order and back-pressure hold), and so are window size changes on a terminal and, without a
//! terminal, Ctrl-C/TERM/HUP as signals. With `-o json` the output is collected and printed as one
//! object, without stdin.

use std::io::Write;

use futures_lite::{AsyncReadExt, StreamExt};
use harness_protocol::method;
use harness_protocol::wire::{
    ExecInputParams, ExecParams, ExecProgress, ExecResult, ExecSize, ExecTty, decode_bytes,
    encode_bytes,
};
use harness_protocol::{CallItem, Client};

use super::{Status, connect, project_name, request_failed};
use crate::output::{Context, print_json};

/// `tty`: `Some(true)` for `-t`, `Some(false)` for `-T`, `None`: a terminal when stdin is one.
pub fn run(ctx: &Context, service: &str, command: Vec<String>, tty: Option<bool>) -> u8 {
    let project = match project_name(ctx) {
        Ok(p) => p,
        Err(s) => return s as u8,
    };
    let stdin_tty = rustix::termios::isatty(std::io::stdin());
    let tty = !ctx.json() && tty.unwrap_or(stdin_tty);
    let params = ExecParams {
        project,
        service: service.to_owned(),
        command,
        stream: !ctx.json(),
        tty: tty.then(|| {
            let size = window_size();
            ExecTty {
                rows: size.rows,
                cols: size.cols,
                term: std::env::var("TERM").ok().filter(|t| !t.is_empty()),
            }
        }),
    };
    let size = serde_json::to_string(&params).map_or(usize::MAX, |v| v.len());
    if super::request_size::refuse("exec", size) {
        return Status::Invalid as u8;
    }
    smol::block_on(async {
        let client = match connect(ctx).await {
            Ok(c) => c,
            Err(s) => return s as u8,
        };
        if ctx.json() {
            let result: ExecResult = match client.call::<method::Exec>(&params).await {
                Ok(r) => r,
                Err(e) => return request_failed("exec", e) as u8,
            };
            print_json(&result);
            return exit_code(&result);
        }
        stream(&client, &params, tty && stdin_tty).await
    })
}

async fn stream(client: &Client, params: &ExecParams, raw: bool) -> u8 {
    let mut call = match client.call_streaming::<method::Exec>(params).await {
        Ok(c) => c,
        Err(e) => return request_failed("exec", e) as u8,
    };
    let exec = call.id();
    // Put in raw mode before the program runs, restored on every way out (drop, also on panic).
    let mut raw_mode = if raw { RawMode::enter() } else { None };
    let mut tasks: Vec<smol::Task<()>> = Vec::new();
    let mut interrupts = 0u32;
    let mut signals = match forwarded_signals(params.tty.is_some()) {
        Ok(s) => Some(s),
        Err(e) => {
            drop(raw_mode.take());
            crate::errln!("error: cannot handle signals: {e}");
            return Status::Failed as u8;
        }
    };
    let (mut out, mut err) = (std::io::stdout(), std::io::stderr());
    loop {
        let next = futures_lite::future::or(async { Step::Item(call.next().await) }, async {
            match signals.as_mut() {
                Some(s) => match s.next().await {
                    Some(Ok(sig)) => Step::Signal(sig),
                    _ => futures_lite::future::pending().await,
                },
                None => futures_lite::future::pending().await,
            }
        })
        .await;
        let item = match next {
            Step::Signal(sig) => {
                use async_signal::Signal as S;
                let input = match sig {
                    S::Winch => {
                        let size = window_size();
                        ExecInputParams {
                            exec,
                            resize: Some(size),
                            ..Default::default()
                        }
                    }
                    other => {
                        if other == S::Int {
                            interrupts += 1;
                            if interrupts > 1 {
                                // Give up: closing the connection kills the command.
                                drop(raw_mode.take());
                                return 130;
                            }
                        }
                        let name = match other {
                            S::Int => "INT",
                            S::Hup => "HUP",
                            _ => "TERM",
                        };
                        ExecInputParams {
                            exec,
                            signal: Some(name.into()),
                            ..Default::default()
                        }
                    }
                };
                let client = client.clone();
                tasks.push(smol::spawn(async move {
                    let _ = client.call::<method::ExecInput>(&input).await;
                }));
                continue;
            }
            Step::Item(item) => item,
        };
        match item {
            Some(Ok(CallItem::Progress(p))) => match serde_json::from_value::<ExecProgress>(p) {
                Ok(ExecProgress::Started { .. }) => {
                    tasks.push(smol::spawn(forward_stdin(client.clone(), exec)));
                }
                Ok(ExecProgress::Output { stream, data }) => {
                    let Ok(bytes) = decode_bytes("data", &data) else {
                        continue;
                    };
                    let w: &mut dyn Write = if stream == "stderr" {
                        &mut err
                    } else {
                        &mut out
                    };
                    if w.write_all(&bytes).and_then(|()| w.flush()).is_err() {
                        // The reader went away (`| head`): stop; closing the connection ends the
                        // command.
                        drop(raw_mode.take());
                        return Status::Ok as u8;
                    }
                }
                Err(_) => {}
            },
            Some(Ok(CallItem::Done(v))) => {
                drop(raw_mode.take());
                return match serde_json::from_value::<ExecResult>(v) {
                    Ok(r) => exit_code(&r),
                    Err(e) => {
                        crate::errln!("error: exec: unexpected answer: {e}");
                        Status::Failed as u8
                    }
                };
            }
            Some(Err(e)) => {
                drop(raw_mode.take());
                return request_failed("exec", e) as u8;
            }
            None => {
                drop(raw_mode.take());
                crate::errln!("error: exec: the daemon closed the stream");
                return Status::Failed as u8;
            }
        }
    }
}

enum Step {
    Item(Option<Result<CallItem, harness_protocol::ClientError>>),
    Signal(async_signal::Signal),
}

/// On a terminal: window size changes, TERM and HUP (Ctrl-C is a byte then). Without: Ctrl-C too.
fn forwarded_signals(tty: bool) -> std::io::Result<async_signal::Signals> {
    use async_signal::Signal as S;
    if tty {
        async_signal::Signals::new([S::Winch, S::Term, S::Hup])
    } else {
        async_signal::Signals::new([S::Int, S::Term, S::Hup])
    }
}

/// Sends stdin as it is read, each chunk after the previous one was written; then end of file.
/// Stops when the command no longer takes input.
async fn forward_stdin(client: Client, exec: u64) {
    let mut stdin = blocking::Unblock::new(std::io::stdin());
    let mut buf = vec![0u8; 128 * 1024];
    loop {
        let n = match stdin.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let input = ExecInputParams {
            exec,
            data: Some(encode_bytes(&buf[..n])),
            ..Default::default()
        };
        if client.call::<method::ExecInput>(&input).await.is_err() {
            return;
        }
    }
    let input = ExecInputParams {
        exec,
        eof: true,
        ..Default::default()
    };
    let _ = client.call::<method::ExecInput>(&input).await;
}

/// The terminal's size (stdin's, else stdout's), 24x80 without one.
fn window_size() -> ExecSize {
    let ws = rustix::termios::tcgetwinsize(std::io::stdin())
        .or_else(|_| rustix::termios::tcgetwinsize(std::io::stdout()));
    match ws {
        Ok(w) if w.ws_row > 0 && w.ws_col > 0 => ExecSize {
            rows: w.ws_row,
            cols: w.ws_col,
        },
        _ => ExecSize { rows: 24, cols: 80 },
    }
}

fn exit_code(result: &ExecResult) -> u8 {
    match (result.code, result.signal) {
        (Some(code), _) => u8::try_from(code & 0xff).unwrap_or(1),
        (None, Some(sig)) => u8::try_from((128 + sig) & 0xff).unwrap_or(1),
        (None, None) => Status::Failed as u8,
    }
}

/// stdin's terminal in raw mode (keys go to the command as typed, Ctrl-C included); the saved
/// settings come back on drop.
struct RawMode {
    saved: rustix::termios::Termios,
}

impl RawMode {
    fn enter() -> Option<RawMode> {
        use rustix::termios::{OptionalActions, tcgetattr, tcsetattr};
        let stdin = std::io::stdin();
        let saved = tcgetattr(&stdin).ok()?;
        let mut raw = saved.clone();
        raw.make_raw();
        tcsetattr(&stdin, OptionalActions::Now, &raw).ok()?;
        Some(RawMode { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = rustix::termios::tcsetattr(
            std::io::stdin(),
            rustix::termios::OptionalActions::Now,
            &self.saved,
        );
    }
}
