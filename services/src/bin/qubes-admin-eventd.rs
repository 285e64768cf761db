//! `qubes-admin-eventd`: the long-lived helper that owns the libvirt connection (lifecycle
//! events, domain cache) and answers per-call processes on
//! `<run_dir>/qubes-admin/eventd.sock`. With `--once` it answers one request from a direct
//! libvirt query on stdout and exits: the fallback per-call processes use when no helper runs.

use std::io::{Read, Write};
use std::process::ExitCode;

use qubes_admin::runtime::eventd;
use qubes_admin::runtime::proto::{Request, MAX_DEFINE};
use qubes_admin::Config;

const USAGE: &str = "usage:
  qubes-admin-eventd                      serve on $QUBES_RUN_DIR/qubes-admin/eventd.sock
  qubes-admin-eventd --once [list]        print every domain and the host size, then exit
  qubes-admin-eventd --once info <uuid>   print one domain (live), then exit
  qubes-admin-eventd --once op <verb> <uuid>
                                          start-paused|resume|pause|shutdown|destroy|undefine
  qubes-admin-eventd --once define        define the domain whose XML is on stdin
environment: QUBES_LIBVIRT_URI QUBES_RUN_DIR";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let config = Config::from_env();
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    match argv.as_slice() {
        [] => match eventd::serve(
            &config,
            Some(reactor(&config)),
            Some(firewall_timer(&config)),
        ) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("qubes-admin-eventd: {e}");
                ExitCode::FAILURE
            }
        },
        ["--once"] | ["--once", "list"] => once(&config, &Request::List),
        ["--once", "info", uuid] => parsed(&config, &format!("info {uuid}")),
        ["--once", "op", verb, uuid] => parsed(&config, &format!("op {verb} {uuid}")),
        ["--once", "define"] => {
            let mut xml = String::new();
            let read = std::io::stdin()
                .take(MAX_DEFINE as u64 + 1)
                .read_to_string(&mut xml);
            match read {
                Ok(n) if n <= MAX_DEFINE => once(&config, &Request::Define(xml)),
                Ok(_) => usage_error("the domain XML is too long"),
                Err(e) => usage_error(&format!("cannot read the domain XML: {e}")),
            }
        }
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

/// Lifecycle changes libvirt reports become the library's reactions: stop processing for a
/// qube that stopped by itself, `domain-paused`.
fn reactor(config: &Config) -> eventd::Reactor {
    let config = config.clone();
    std::sync::Arc::new(move |hv, ev| qubes_admin::react_to_domain_event(&config, hv, ev))
}

/// Firewall rules expire as in the reference: dropped from `firewall.xml` and from the netvm's
/// QubesDB when their time comes (a Set leaves word in the timers directory).
fn firewall_timer(config: &Config) -> eventd::Timer {
    let config = config.clone();
    eventd::Timer {
        wake_dir: qubes_admin::model::firewall::timers_dir(&config.run_dir),
        job: Box::new(move |hv| qubes_admin::expire_firewall_rules(&config, hv)),
    }
}

fn usage_error(msg: &str) -> ExitCode {
    eprintln!("qubes-admin-eventd: {msg}\n{USAGE}");
    ExitCode::from(2)
}

/// One request given as its protocol line.
fn parsed(config: &Config, line: &str) -> ExitCode {
    match Request::parse(line) {
        Ok(req) => once(config, &req),
        Err(e) => usage_error(&e.to_string()),
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
