//! `qubes-admin-call`: one Admin API call per process.
//!
//! Front ends (one code path: [`qubes_admin::System::call`]):
//! * **qrexec exec-service mode** — whenever `QREXEC_SERVICE_FULL_NAME` is set (or the binary is
//!   invoked under an `admin.*` name). argv is then never read as options: qrexec passes the
//!   call's argument as argv[1], so `admin.vm.List+--socket-request` must stay an argument.
//! * `--socket-request[=admin|internal|misc]` — one request in qubesd socket framing on stdin,
//!   to one of qubesd's three sockets (the admin socket by default). systemd's socket units
//!   (`qubes-rpc/*.socket`, `Accept=yes`) start one per connection.
//! * `call METHOD[+ARG] [DEST] [--src NAME]` — for humans: OK body on stdout, exception as
//!   `Type: message` on stderr and exit status 1.
//! * `methods` — the qrexec service names generated from the dispatch table.
//! * `qrexec SOURCE TARGET SERVICE[+ARG]` — local qrexec for development: the call as qrexec
//!   would run it from qube SOURCE, after the qrexec policy allowed it (exit 126 otherwise).

use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::process::ExitCode;

use qubes_admin::api::{Endpoint, Socket};
use qubes_admin::wire::{self, RawRequest, Target};
use qubes_admin::{ApiError, Config, System};

const USAGE: &str = "usage:
  qubes-admin-call --socket-request[=admin|internal|misc]
                                           < '<method>+<arg> <src> name <dest>\\0<payload>'
  qubes-admin-call call METHOD[+ARG] [DEST] [--src NAME]   (payload on stdin unless a tty)
  qubes-admin-call methods [--markdown|--policy]   (qrexec service names, one per line; or the
                                           method table; or 90-admin-default.policy)
  qubes-admin-call qrexec SOURCE TARGET SERVICE[+ARG]   (as qrexec would run it from qube SOURCE:
                                           the policy decides; exit 126 when it refuses)
  qubes-admin-call sandbox DIR [URI]       (create a sandbox dom0 in DIR, libvirt at URI
                                           [default test:///default]; prints its environment)
  (as a qrexec service: QREXEC_SERVICE_FULL_NAME and friends in the environment)
environment: QUBES_XML_PATH QUBES_BASE_DIR QUBES_LIBVIRT_URI QUBES_RUN_DIR QUBES_POLICY_DIR
             QUBES_LOCK_TIMEOUT_MS QUBES_ADMIN_EVENTD QUBES_EVENT_LOG_MAX_BYTES
             QUBES_ADMIN_TIMING (print the time spent waiting on libvirt to stderr)";

fn main() -> ExitCode {
    // A caller that disconnects must not interrupt an operation: finish, then exit.
    qubes_admin::ffi::ignore_sigpipe();
    // qubes.xml is read through a mapping; its truncation by another program ends the call
    // with an exception frame.
    qubes_admin::ffi::guard_sigbus();
    let args: Vec<OsString> = std::env::args_os().collect();
    let service = std::env::var_os("QREXEC_SERVICE_FULL_NAME");
    let argv0 = args
        .first()
        .and_then(|a| {
            std::path::Path::new(a)
                .file_name()
                .map(|n| n.as_bytes().to_vec())
        })
        .unwrap_or_default();
    if let Some(service) = service {
        return exec_service(service.into_vec());
    }
    if argv0.starts_with(b"admin.") || argv0.starts_with(b"qubes.") {
        // Invoked through an /etc/qubes-rpc link without qrexec's variables: the method is the
        // link name and argv[1] the argument (still never an option).
        let mut full = argv0;
        if let Some(arg) = args.get(1) {
            full.push(b'+');
            full.extend_from_slice(arg.as_bytes());
        } else if !full.contains(&b'+') {
            full.push(b'+');
        }
        return exec_service(full);
    }
    match args.get(1).map(|a| a.as_bytes()) {
        Some(b"--socket-request") if args.len() == 2 => socket_request(Socket::Admin),
        Some(a) if a.starts_with(b"--socket-request=") && args.len() == 2 => {
            let name = String::from_utf8_lossy(a.get(17..).unwrap_or_default()).into_owned();
            match Socket::from_name(&name) {
                Some(s) => socket_request(s),
                None => {
                    eprintln!("unknown socket '{name}' (admin, internal or misc)\n{USAGE}");
                    ExitCode::from(2)
                }
            }
        }
        Some(b"call") => human_call(args.get(2..).unwrap_or_default()),
        Some(b"methods") if args.get(2).map(|a| a.as_bytes()) == Some(b"--markdown") => {
            write_out(qubes_admin::api::markdown().as_bytes());
            ExitCode::SUCCESS
        }
        Some(b"methods") if args.get(2).map(|a| a.as_bytes()) == Some(b"--policy") => {
            write_out(qubes_admin::api::admin_policy().as_bytes());
            ExitCode::SUCCESS
        }
        Some(b"methods") if args.len() == 2 => {
            write_out(qubes_admin::api::service_list().as_bytes());
            ExitCode::SUCCESS
        }
        Some(b"sandbox") if (3..=4).contains(&args.len()) => sandbox_init(args.get(2), args.get(3)),
        Some(b"qrexec") => match args.get(2..) {
            Some([src, target, service]) => local_qrexec(src, target, service),
            _ => {
                eprintln!("{USAGE}");
                ExitCode::from(2)
            }
        },
        Some(b"-h" | b"--help") => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}

/// Reads stdin to EOF, at most `wire::MAX_REQUEST` bytes (one more byte means "too long").
fn read_stdin() -> Result<Vec<u8>, ApiError> {
    let mut buf = Vec::new();
    let limit = wire::MAX_REQUEST as u64 + 1;
    std::io::stdin()
        .lock()
        .take(limit)
        .read_to_end(&mut buf)
        .map_err(|e| ApiError::protocol(format!("cannot read the request: {e}")))?;
    if buf.len() > wire::MAX_REQUEST {
        return Err(wire::too_long(buf.len()));
    }
    Ok(buf)
}

fn write_out(bytes: &[u8]) {
    let mut out = std::io::stdout().lock();
    // The caller may be gone; nothing to do about it.
    let _ = out.write_all(bytes).and_then(|_| out.flush());
}

fn env_bytes(k: &str) -> Option<Vec<u8>> {
    std::env::var_os(k).map(OsString::into_vec)
}

fn exec_service(service: Vec<u8>) -> ExitCode {
    let result = read_stdin().and_then(|payload| {
        wire::from_exec_env(
            &service,
            &env_bytes("QREXEC_REMOTE_DOMAIN").unwrap_or_default(),
            env_bytes("QREXEC_REQUESTED_TARGET_TYPE").as_deref(),
            env_bytes("QREXEC_REQUESTED_TARGET").as_deref(),
            env_bytes("QREXEC_REQUESTED_TARGET_KEYWORD").as_deref(),
            payload,
        )
    });
    reply(result, Endpoint::Qrexec);
    // qrexec's exit status is 0 even for an exception frame.
    ExitCode::SUCCESS
}

fn socket_request(socket: Socket) -> ExitCode {
    reply(
        read_stdin().and_then(|buf| wire::parse_socket_request(&buf)),
        Endpoint::Socket(socket),
    );
    ExitCode::SUCCESS
}

fn reply(request: Result<RawRequest, ApiError>, endpoint: Endpoint) {
    match request {
        Ok(raw) => {
            let mut out = std::io::stdout().lock();
            let mut system = System::open(Config::from_env()).serving(endpoint);
            // The caller may be gone; nothing to do about it.
            let _ = system.serve(&raw, &mut out);
            if std::env::var_os("QUBES_ADMIN_TIMING").is_some() {
                // For benchmarks: what part of the call libvirt took, and its longest request
                // (its start in µs since the epoch, its length in µs).
                let w = system.hypervisor_waited();
                let (began, took) = w
                    .longest
                    .unwrap_or((std::time::UNIX_EPOCH, Default::default()));
                let began = began
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default();
                eprintln!(
                    "qubes-admin-timing: hypervisor {} us longest {}+{} us",
                    w.total.as_micros(),
                    began.as_micros(),
                    took.as_micros()
                );
            }
        }
        Err(e) => write_out(&wire::frame_exception(&e)),
    }
}

fn human_call(args: &[OsString]) -> ExitCode {
    let mut src = b"dom0".to_vec();
    let mut positional = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_bytes() {
            b"--src" => match it.next() {
                Some(v) => src = v.as_bytes().to_vec(),
                None => {
                    eprintln!("--src needs a value\n{USAGE}");
                    return ExitCode::from(2);
                }
            },
            _ => positional.push(a.as_bytes().to_vec()),
        }
    }
    let (service, dest) = match positional.as_slice() {
        [s] => (s.clone(), b"dom0".to_vec()),
        [s, d] => (s.clone(), d.clone()),
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let payload = if nix::unistd::isatty(std::io::stdin()).unwrap_or(false) {
        Vec::new()
    } else {
        match read_stdin() {
            Ok(p) => p,
            Err(e) => {
                eprintln!("{}: {}", e.ty.as_str(), e.msg);
                return ExitCode::FAILURE;
            }
        }
    };
    let (method, arg) = wire::split_service(&service);
    let raw = RawRequest {
        method,
        arg,
        src,
        target: Target::Name(dest),
        payload,
    };
    match System::open(Config::from_env()).execute(&raw) {
        Ok(body) => {
            write_out(&body);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{}: {}", e.ty.as_str(), e.msg);
            ExitCode::FAILURE
        }
    }
}

/// `qrexec SOURCE TARGET SERVICE[+ARG]`: the policy's verdict on the call (as the policy daemon
/// gives it), then, if it allows the call to run in dom0, the call itself in exec-service mode
/// with the environment qrexec would set. A refusal, an ask (no agent here to ask) or a target
/// other than dom0 (the service would run in that qube) exit 126, as qrexec-client does.
fn local_qrexec(source: &OsString, target: &OsString, service: &OsString) -> ExitCode {
    let (source, target, full) = (
        source.to_string_lossy().into_owned(),
        target.to_string_lossy().into_owned(),
        service.to_string_lossy().into_owned(),
    );
    let (name, arg) = full.split_once('+').unwrap_or((&full, ""));
    let req = qubes_admin::policy::Request {
        service: name.to_string(),
        argument: format!("+{arg}"),
        source: source.clone(),
        target: target.clone(),
    };
    let refuse = |why: &str| {
        eprintln!("qrexec: {full} from {source} to {target}: request refused: {why}");
        ExitCode::from(126)
    };
    let mut system = System::open(Config::from_env());
    match system.policy_verdict(&req) {
        Err(e) => refuse(&format!("{}: {}", e.ty.as_str(), e.msg)),
        Ok(qubes_admin::policy::Verdict::Deny { reason, .. }) => refuse(&reason),
        Ok(qubes_admin::policy::Verdict::Ask { targets, .. }) => refuse(&format!(
            "the policy asks the user (choices: {}); there is no agent to ask here",
            targets.join(", ")
        )),
        Ok(qubes_admin::policy::Verdict::Allow { target: to, .. }) if to != "dom0" => refuse(
            &format!("allowed to {to}, but only dom0's services run here"),
        ),
        Ok(qubes_admin::policy::Verdict::Allow { .. }) if source == "dom0" => {
            refuse("a call from dom0 to dom0 is not a qrexec call")
        }
        Ok(qubes_admin::policy::Verdict::Allow { .. }) => {
            let (ty, name, keyword) = match target.strip_prefix('@') {
                Some(k) => (Some(&b"keyword"[..]), None, Some(k.as_bytes())),
                None if target.is_empty() => (None, None, None),
                None => (Some(&b"name"[..]), Some(target.as_bytes()), None),
            };
            let result = read_stdin().and_then(|payload| {
                wire::from_exec_env(
                    full.as_bytes(),
                    source.as_bytes(),
                    ty,
                    name,
                    keyword,
                    payload,
                )
            });
            reply(result, Endpoint::Qrexec);
            ExitCode::SUCCESS
        }
    }
}

fn sandbox_init(dir: Option<&OsString>, uri: Option<&OsString>) -> ExitCode {
    let Some(dir) = dir else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    match qubes_admin::sandbox::init(std::path::Path::new(dir)) {
        Ok(mut config) => {
            if let Some(uri) = uri {
                config.libvirt_uri = uri.to_string_lossy().into_owned();
            }
            write_out(qubes_admin::sandbox::env_lines(&config).as_bytes());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("qubes-admin-call sandbox: {e}");
            ExitCode::FAILURE
        }
    }
}
