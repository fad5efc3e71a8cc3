//! `kiln ps`, `logs`, `stop`, `start`, `restart`, `rm`, `stats` and
//! `inspect`: requests to the daemon and how their answers are printed.

use std::io::Write;

use kiln_supervisor::client::{Client, ClientError, default_socket};
use kiln_supervisor::proto::Request;
use serde_json::Value;

use crate::cli::{LogsArgs, NameArgs, PsArgs, RmArgs, SocketOpts, StopArgs};
use crate::error::KilnError;

/// Connects to the daemon; `Ok(Err(code))` after printing its refusal.
fn connect(socket: &SocketOpts) -> Result<Result<Client, u8>, KilnError> {
    let path = socket.socket.clone().unwrap_or_else(default_socket);
    match Client::connect(&path) {
        Ok(c) => Ok(Ok(c)),
        Err(ClientError::Refused(response)) => Ok(Err(refused(&response))),
        Err(e @ ClientError::Connect { .. }) => Err(KilnError::Usage {
            message: e.to_string(),
            hint: "start it with `kiln daemon` (as root), or point --socket or KILN_SOCKET at its socket".into(),
        }),
        Err(e) => Err(KilnError::Build(e.to_string())),
    }
}

/// Prints the daemon's refusal; the exit code is 1.
fn refused(response: &kiln_supervisor::proto::Response) -> u8 {
    let mut s = format!(
        "error: {}\n",
        response.error.as_deref().unwrap_or("the daemon refused")
    );
    if let Some(hint) = &response.hint {
        s.push_str(&format!("  hint: {hint}\n"));
    }
    eprint!("{s}");
    1
}

/// Sends `request`; `Ok(Ok(data))` on success, `Ok(Err(code))` after
/// printing the daemon's refusal.
pub fn call(socket: &SocketOpts, request: &Request) -> Result<Result<Value, u8>, KilnError> {
    let mut client = match connect(socket)? {
        Ok(c) => c,
        Err(code) => return Ok(Err(code)),
    };
    let response = client
        .call(request)
        .map_err(|e| KilnError::Build(e.to_string()))?;
    if response.ok {
        Ok(Ok(response.data))
    } else {
        Ok(Err(refused(&response)))
    }
}

fn print_json(value: &Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
    );
}

fn duration(s: u64) -> String {
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{}s", s / 60, s % 60),
        3600..86400 => format!("{}h{}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{}h", s / 86400, s % 86400 / 3600),
    }
}

fn bytes(b: u64) -> String {
    match b {
        0..1024 => format!("{b}B"),
        1024..1048576 => format!("{:.1}KiB", b as f64 / 1024.0),
        _ => format!("{:.1}MiB", b as f64 / 1048576.0),
    }
}

/// `kiln ps`.
pub fn ps(args: &PsArgs) -> Result<u8, KilnError> {
    let rows = match call(&args.socket, &Request::Ps {})? {
        Ok(rows) => rows,
        Err(code) => return Ok(code),
    };
    if args.json {
        print_json(&rows);
        return Ok(0);
    }
    let mut out = format!(
        "{:<20} {:<6} {:<10} {:>8} {:>8} {:>8} {:>9}\n",
        "NAME", "TARGET", "STATE", "PID", "UPTIME", "RESTARTS", "MEMORY"
    );
    for row in rows.as_array().into_iter().flatten() {
        let s = |k: &str| {
            row.get(k)
                .and_then(Value::as_str)
                .unwrap_or("-")
                .to_string()
        };
        let n = |k: &str| row.get(k).and_then(Value::as_u64);
        out.push_str(&format!(
            "{:<20} {:<6} {:<10} {:>8} {:>8} {:>8} {:>9}\n",
            s("name"),
            s("target"),
            s("state"),
            n("pid").map_or("-".into(), |p| p.to_string()),
            n("uptime_s").map_or("-".into(), duration),
            n("restarts").unwrap_or(0),
            n("rss_bytes").map_or("-".into(), bytes),
        ));
    }
    print!("{out}");
    Ok(0)
}

/// `kiln logs`.
pub fn logs(args: &LogsArgs) -> Result<u8, KilnError> {
    let mut client = match connect(&args.socket)? {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    let request = Request::Logs {
        name: args.name.clone(),
        follow: args.follow,
        tail: args.tail,
    };
    let response = client
        .call(&request)
        .map_err(|e| KilnError::Build(e.to_string()))?;
    if !response.ok {
        return Ok(refused(&response));
    }
    let mut stdout = std::io::stdout().lock();
    client
        .copy_rest(&mut stdout)
        .map_err(|e| KilnError::Build(e.to_string()))?;
    let _ = stdout.flush();
    Ok(0)
}

/// `kiln stop`.
pub fn stop(args: &StopArgs) -> Result<u8, KilnError> {
    let request = Request::Stop {
        name: args.name.clone(),
        timeout_s: args.timeout,
    };
    match call(&args.socket, &request)? {
        Ok(data) => {
            // How it ended: `exit 0` is a unikernel that heard the stop
            // request and finished (on hvt and spt through kiln's tender
            // extension, docs/supervisor.md).
            let exit = data
                .get("exit")
                .cloned()
                .and_then(|e| serde_json::from_value::<kiln_supervisor::policy::Exit>(e).ok());
            let how = if data.get("was_running").and_then(Value::as_bool) != Some(true) {
                "was not running".to_string()
            } else if data.get("forced").and_then(Value::as_bool) == Some(true) {
                "killed (it did not stop within the timeout)".to_string()
            } else if let Some(exit) = exit {
                format!("stopped ({exit})")
            } else {
                "stopped".to_string()
            };
            eprintln!("{}: {how}", args.name);
            Ok(0)
        }
        Err(code) => Ok(code),
    }
}

/// `kiln start`.
pub fn start(args: &NameArgs) -> Result<u8, KilnError> {
    started(
        &args.name,
        call(
            &args.socket,
            &Request::Start {
                name: args.name.clone(),
            },
        )?,
    )
}

/// `kiln restart`.
pub fn restart(args: &StopArgs) -> Result<u8, KilnError> {
    let request = Request::Restart {
        name: args.name.clone(),
        timeout_s: args.timeout,
    };
    started(&args.name, call(&args.socket, &request)?)
}

fn started(name: &str, answer: Result<Value, u8>) -> Result<u8, KilnError> {
    match answer {
        Ok(data) => {
            eprintln!(
                "started {name} (pid {})",
                data.get("pid").map_or("?".into(), ToString::to_string)
            );
            Ok(0)
        }
        Err(code) => Ok(code),
    }
}

/// `kiln rm`.
pub fn rm(args: &RmArgs) -> Result<u8, KilnError> {
    let request = Request::Rm {
        name: args.name.clone(),
        force: args.force,
    };
    match call(&args.socket, &request)? {
        Ok(_) => {
            eprintln!("removed {}", args.name);
            Ok(0)
        }
        Err(code) => Ok(code),
    }
}

/// `kiln stats`.
pub fn stats(args: &NameArgs) -> Result<u8, KilnError> {
    let data = match call(
        &args.socket,
        &Request::Stats {
            name: args.name.clone(),
        },
    )? {
        Ok(d) => d,
        Err(code) => return Ok(code),
    };
    let p = data.get("process").cloned().unwrap_or(Value::Null);
    let n = |k: &str| p.get(k).and_then(Value::as_u64).unwrap_or(0);
    let mut out = format!(
        "name       {}\npid        {}\nuptime     {:.1}s\nprocesses  {}\ncpu user   {} ms\ncpu system {} ms\nrss        {}\npeak rss   {}\nthreads    {}\nctx switch {} voluntary, {} involuntary\nstorage    {} read, {} written\nsyscall io {} read, {} written\n",
        args.name,
        data.get("pid").map_or("-".into(), ToString::to_string),
        data.get("uptime_s").and_then(Value::as_f64).unwrap_or(0.0),
        n("processes"),
        n("user_ms"),
        n("system_ms"),
        bytes(n("rss_bytes")),
        bytes(n("peak_rss_bytes")),
        n("threads"),
        n("voluntary_ctxt_switches"),
        n("nonvoluntary_ctxt_switches"),
        bytes(n("storage_read_bytes")),
        bytes(n("storage_write_bytes")),
        bytes(n("rchar")),
        bytes(n("wchar")),
    );
    for tap in data
        .get("net")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let t = |k: &str| tap.get(k).and_then(Value::as_u64).unwrap_or(0);
        out.push_str(&format!(
            "net {:<6} sent {} in {} frames, received {} in {} frames, {} dropped\n",
            tap.get("tap").and_then(Value::as_str).unwrap_or("?"),
            bytes(t("guest_tx_bytes")),
            t("guest_tx_packets"),
            bytes(t("guest_rx_bytes")),
            t("guest_rx_packets"),
            t("guest_rx_dropped"),
        ));
    }
    let block = data.get("block").cloned().unwrap_or(Value::Null);
    let devices = block.get("devices").and_then(Value::as_array);
    for d in devices.into_iter().flatten() {
        let c = |k: &str| d.get(k).and_then(Value::as_u64).unwrap_or(0);
        out.push_str(&format!(
            "block {:<6} {} reads ({}), {} writes ({}), {} errors\n",
            d.get("device").and_then(Value::as_str).unwrap_or("?"),
            c("reads"),
            bytes(c("read_bytes")),
            c("writes"),
            bytes(c("written_bytes")),
            c("errors"),
        ));
    }
    if let Some(by) = block.get("counted_by").and_then(Value::as_str) {
        out.push_str(&format!("block      counted by {by}\n"));
    } else if let Some(why) = block.get("why").and_then(Value::as_str)
        && why != "no block device"
    {
        out.push_str(&format!("block      not counted per device: {why}\n"));
    }
    print!("{out}");
    Ok(0)
}

/// `kiln inspect`.
pub fn inspect(args: &NameArgs) -> Result<u8, KilnError> {
    match call(
        &args.socket,
        &Request::Inspect {
            name: args.name.clone(),
        },
    )? {
        Ok(d) => {
            print_json(&d);
            Ok(0)
        }
        Err(code) => Ok(code),
    }
}
