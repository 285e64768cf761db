//! `qubes-admin-eventd`: the long-lived helper that owns the libvirt connection (lifecycle
//! events, domain cache) and answers per-call processes on
//! `<run_dir>/qubes-admin/eventd.sock`. With `--once` it answers one request from a direct
//! libvirt query on stdout and exits: the fallback per-call processes use when no helper runs.

use std::io::Write;
use std::process::ExitCode;

use qubes_admin::runtime::eventd;
use qubes_admin::runtime::proto::Request;
use qubes_admin::Config;

const USAGE: &str = "usage:
  qubes-admin-eventd                      serve on $QUBES_RUN_DIR/qubes-admin/eventd.sock
  qubes-admin-eventd --once [list]        print every domain and the host size, then exit
  qubes-admin-eventd --once info <uuid>   print one domain (live), then exit
environment: QUBES_LIBVIRT_URI QUBES_RUN_DIR";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let config = Config::from_env();
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    match argv.as_slice() {
        [] => match eventd::serve(&config) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("qubes-admin-eventd: {e}");
                ExitCode::FAILURE
            }
        },
        ["--once"] | ["--once", "list"] => once(&config, &Request::List),
        ["--once", "info", uuid] => match Request::parse(&format!("info {uuid}")) {
            Ok(req) => once(&config, &req),
            Err(e) => {
                eprintln!("qubes-admin-eventd: {e}\n{USAGE}");
                ExitCode::from(2)
            }
        },
        ["-h" | "--help"] => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}

fn once(config: &Config, req: &Request) -> ExitCode {
    let (reply, ok) = eventd::run_once(&config.libvirt_uri, req);
    let mut out = std::io::stdout().lock();
    let written = out.write_all(reply.as_bytes()).and_then(|_| out.flush());
    if ok && written.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
