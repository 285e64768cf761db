//! Front ends of `qubes-admin-call`: qrexec exec-service mode, `--socket-request`, the human
//! `call` front end, mode selection as a security boundary, and framing errors.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

mod support;

use support::bin;

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/fixtures/gen10/qubes.xml"
);

struct Sandbox {
    dir: tempfile::TempDir,
}

impl Sandbox {
    fn new() -> Sandbox {
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(FIXTURE, dir.path().join("qubes.xml")).unwrap();
        std::fs::create_dir(dir.path().join("run")).unwrap();
        Sandbox { dir }
    }
    fn xml(&self) -> PathBuf {
        self.dir.path().join("qubes.xml")
    }
    fn command(&self) -> Command {
        let mut c = Command::new(bin());
        c.env_clear()
            .env("QUBES_XML_PATH", self.xml())
            .env("QUBES_BASE_DIR", self.dir.path())
            .env("QUBES_RUN_DIR", self.dir.path().join("run"))
            .env("QUBES_LIBVIRT_URI", "test:///default")
            .env("PATH", std::env::var_os("PATH").unwrap_or_default());
        c
    }
}

fn run(mut c: Command, stdin: &[u8]) -> Output {
    let mut child = c
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

fn exec_service(
    sb: &Sandbox,
    service: &str,
    src: &str,
    target: &str,
    argv1: Option<&str>,
    stdin: &[u8],
) -> Output {
    let mut c = sb.command();
    c.env("QREXEC_SERVICE_FULL_NAME", service)
        .env("QREXEC_REMOTE_DOMAIN", src);
    if let Some(kw) = target.strip_prefix('@') {
        c.env("QREXEC_REQUESTED_TARGET_TYPE", "keyword")
            .env("QREXEC_REQUESTED_TARGET_KEYWORD", kw);
    } else {
        c.env("QREXEC_REQUESTED_TARGET_TYPE", "name")
            .env("QREXEC_REQUESTED_TARGET", target);
    }
    if let Some((_, arg)) = service.split_once('+') {
        c.env("QREXEC_SERVICE_ARGUMENT", arg);
    }
    if let Some(a) = argv1 {
        c.arg(a);
    }
    run(c, stdin)
}

fn socket(sb: &Sandbox, request: &[u8]) -> Output {
    let mut c = sb.command();
    c.arg("--socket-request");
    run(c, request)
}

fn file_bytes(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap()
}

const CLASSES: &[u8] = b"0\0AdminVM\nAppVM\nDispVM\nRemoteVM\nStandaloneVM\nTemplateVM\n";

#[test]
fn exec_service_mode_replies_on_stdout_with_status_zero() {
    let sb = Sandbox::new();
    let out = exec_service(&sb, "admin.vmclass.List+", "dom0", "@adminvm", None, b"");
    assert_eq!(out.stdout, CLASSES);
    assert!(out.status.success());
    // by name, as qrexec passes it for `dom0`
    let out = exec_service(
        &sb,
        "admin.vm.tag.Get+guivm-dom0",
        "dom0",
        "vm0001",
        Some("guivm-dom0"),
        b"",
    );
    assert_eq!(out.stdout, b"0\x001");
    // an exception is still exit status 0 (qrexec passes the frame back)
    let out = exec_service(
        &sb,
        "admin.vm.tag.Get+bad!",
        "dom0",
        "vm0001",
        Some("bad!"),
        b"",
    );
    assert_eq!(
        out.stdout,
        b"2\0QubesInvalidTagError\0\0disallowed characters\0"
    );
    assert!(out.status.success());
}

#[test]
fn exec_service_mode_never_reads_argv_as_options() {
    let sb = Sandbox::new();
    let before = file_bytes(&sb.xml());
    // A qube calls admin.vm.List+--socket-request and sends a forged header claiming dom0.
    let out = exec_service(
        &sb,
        "admin.vm.List+--socket-request",
        "vm0001",
        "@adminvm",
        Some("--socket-request"),
        b"admin.vm.tag.Set+x dom0 name vm0002\0",
    );
    // The forged header is the payload of the qube's own call: refused as such.
    assert_eq!(out.stdout, b"2\0ProtocolError\0\0unexpected payload\0");
    assert!(out.status.success());
    assert_eq!(file_bytes(&sb.xml()), before);
    // Same with `call`: still exec-service mode, the argument is just an argument.
    let out = exec_service(
        &sb,
        "admin.vm.List+call",
        "vm0001",
        "@adminvm",
        Some("call"),
        b"",
    );
    assert_eq!(out.stdout, b"2\0ProtocolError\0\0unexpected argument\0");
    // And `qrexec` (the local-qrexec tool's word) with a forged source/target/service.
    let mut c = sb.command();
    c.env("QREXEC_SERVICE_FULL_NAME", "admin.vm.List+qrexec")
        .env("QREXEC_REMOTE_DOMAIN", "vm0001")
        .env("QREXEC_REQUESTED_TARGET_TYPE", "keyword")
        .env("QREXEC_REQUESTED_TARGET_KEYWORD", "adminvm")
        .args(["qrexec", "dom0", "@adminvm", "admin.vm.tag.Set+x"]);
    let out = run(c, b"");
    assert_eq!(out.stdout, b"2\0ProtocolError\0\0unexpected argument\0");
    assert_eq!(file_bytes(&sb.xml()), before);
}

#[test]
fn socket_request_mode() {
    let sb = Sandbox::new();
    let out = socket(&sb, b"admin.vmclass.List+ dom0 keyword adminvm\0");
    assert_eq!(out.stdout, CLASSES);
    assert!(out.status.success());
    let out = socket(&sb, b"admin.vmclass.List+ dom0 name dom0\0");
    assert_eq!(out.stdout, CLASSES);
    let out = socket(
        &sb,
        b"admin.vmclass.List+ dom0 name uuid:00000000-0000-0000-0000-000000000000\0",
    );
    assert_eq!(out.stdout, CLASSES);
}

#[test]
fn framing_errors_get_exception_frames_not_silence() {
    let sb = Sandbox::new();
    for req in [
        &b"admin.vm.List dom0\0"[..],
        b"admin.vm.List+ dom0 name dom0",
        b"admin.vm.List+ dom0 keyword default\0",
        b"",
    ] {
        let out = socket(&sb, req);
        assert!(
            out.stdout.starts_with(b"2\0ProtocolError\0\0"),
            "{req:?} -> {:?}",
            out.stdout
        );
        assert_eq!(out.stdout.last(), Some(&0u8));
    }
    // Over the 65536-byte cap.
    let mut big = b"admin.vm.notes.Set+ dom0 name vm0001\0".to_vec();
    big.resize(65537, b'x');
    let out = socket(&sb, &big);
    assert!(
        out.stdout
            .starts_with(b"2\0ProtocolError\0\0request too long"),
        "{:?}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = exec_service(
        &sb,
        "admin.vm.notes.Set+",
        "dom0",
        "vm0001",
        None,
        &vec![b'x'; 65537],
    );
    assert!(out
        .stdout
        .starts_with(b"2\0ProtocolError\0\0request too long"));
}

#[test]
fn unknown_names_and_methods() {
    let sb = Sandbox::new();
    let out = socket(&sb, b"admin.no.Such+ dom0 name dom0\0");
    assert_eq!(
        out.stdout,
        b"2\0ProtocolError\0\0no such method: 'admin.no.Such'\0"
    );
    // an unknown destination wins over an unknown method (decoded first)
    let out = socket(&sb, b"admin.no.Such+ dom0 name nosuch\0");
    assert_eq!(
        out.stdout,
        b"2\0QubesVMNotFoundError\0\0No such domain: 'nosuch'\0"
    );
    let out = socket(&sb, b"admin.vm.List+ nosuch name dom0\0");
    assert_eq!(
        out.stdout,
        b"2\0QubesVMNotFoundError\0\0No such domain: 'nosuch'\0"
    );
    let out = socket(&sb, b"admin.vm.List+ dom0 name .x\0");
    assert_eq!(
        out.stdout,
        b"2\0QubesValueError\0\0VM name cannot start with hyphen, underscore, dot or numbers\0"
    );
    let out = socket(&sb, b"admin.vm.List+ dom0 name uuid:1234\0");
    assert_eq!(
        out.stdout,
        b"2\0QubesVMInvalidUUIDError\0\0VM UUID is not valid: '1234'\0"
    );
}

#[test]
fn human_front_end() {
    let sb = Sandbox::new();
    let mut c = sb.command();
    c.args(["call", "admin.vmclass.List"]);
    let out = run(c, b"");
    assert!(out.status.success());
    assert_eq!(out.stdout, &CLASSES[2..]);
    let mut c = sb.command();
    c.args(["call", "admin.vm.tag.Get+bad!", "vm0001"]);
    let out = run(c, b"");
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "QubesInvalidTagError: disallowed characters\n"
    );
    let mut c = sb.command();
    c.args([
        "call",
        "admin.vm.tag.Get+created-by-dom0",
        "vm0001",
        "--src",
        "vm0002",
    ]);
    assert_eq!(run(c, b"").stdout, b"0");
    let mut c = sb.command();
    c.arg("--bogus");
    assert_eq!(run(c, b"").status.code(), Some(2));
}

#[test]
fn a_caller_that_hangs_up_does_not_interrupt_the_call() {
    let sb = Sandbox::new();
    let mut c = sb.command();
    c.arg("--socket-request");
    let mut child = c
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The caller goes away before the reply: its end of the reply pipe is closed first.
    drop(child.stdout.take());
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"admin.vm.tag.Set+hangup dom0 name vm0001\0")
        .unwrap();
    let status = child.wait().unwrap();
    // Not killed by SIGPIPE: the call finished and exited normally.
    assert!(status.success(), "{status:?}");
    let out = socket(&sb, b"admin.vm.tag.Get+hangup dom0 name vm0001\0");
    assert_eq!(out.stdout, b"0\x001");
}

#[test]
fn nothing_starts_before_the_callers_eof() {
    let sb = Sandbox::new();
    let before = file_bytes(&sb.xml());
    let mut c = sb.command();
    c.arg("--socket-request");
    let mut child = c
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(b"admin.vm.tag.Set+early dom0 name vm0001\0")
        .unwrap();
    stdin.flush().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    // Still waiting for EOF: the store is untouched.
    assert_eq!(file_bytes(&sb.xml()), before);
    assert!(child.try_wait().unwrap().is_none());
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.stdout, b"0\0");
    assert_ne!(file_bytes(&sb.xml()), before);
}

/// `qrexec SOURCE TARGET SERVICE[+ARG]`: the policy decides as qrexec's would (exit 126 and a
/// reason on a refusal, an ask, or a target other than dom0), then the call runs in
/// exec-service mode as from SOURCE, its replies filtered by the same policy.
#[test]
fn local_qrexec_applies_the_policy() {
    let sb = Sandbox::new();
    let policy = sb.dir.path().join("policy.d");
    std::fs::create_dir(&policy).unwrap();
    std::fs::write(
        policy.join("30-mgmt.policy"),
        "admin.vm.List * vm0003 @adminvm allow target=dom0\n\
         admin.vm.List * vm0003 @tag:managed allow target=dom0\n\
         admin.vm.tag.Set * vm0003 @tag:managed allow target=dom0\n\
         admin.vm.feature.Get * vm0003 @anyvm ask default_target=dom0\n\
         admin.vm.property.Get * vm0003 @anyvm allow\n",
    )
    .unwrap();
    let qrexec = |src: &str, target: &str, service: &str, stdin: &[u8]| {
        let mut c = sb.command();
        c.env("QUBES_POLICY_DIR", &policy)
            .args(["qrexec", src, target, service]);
        run(c, stdin)
    };
    let mut tag = sb.command();
    tag.args(["call", "admin.vm.tag.Set+managed", "vm0001"]);
    assert!(run(tag, b"").status.success());

    // A management qube lists exactly what its policy shows it.
    let out = qrexec("vm0003", "@adminvm", "admin.vm.List", b"");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let names: Vec<&str> = text
        .trim_start_matches("0\0")
        .lines()
        .map(|l| l.split(' ').next().unwrap())
        .collect();
    assert_eq!(names, ["dom0", "vm0001"]);
    let out = qrexec("vm0003", "vm0001", "admin.vm.List", b"");
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("0\0vm0001 class=AppVM "));
    // Refused: another qube; a call with no rule; an ask; an allow without target=dom0.
    for (target, service, why) in [
        ("vm0002", "admin.vm.List", "no matching rule found"),
        ("vm0001", "admin.vm.Start", "no matching rule found"),
        (
            "vm0001",
            "admin.vm.feature.Get+x",
            "the policy asks the user",
        ),
        (
            "vm0001",
            "admin.vm.property.Get+label",
            "allowed to vm0001, but only dom0's services run here",
        ),
    ] {
        let out = qrexec("vm0003", target, service, b"");
        assert_eq!(out.status.code(), Some(126), "{service} {target}");
        assert!(out.stdout.is_empty());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("request refused") && err.contains(why),
            "{err}"
        );
    }
    // Allowed by the policy, still refused by the API: the protected tags.
    let out = qrexec(
        "vm0003",
        "vm0001",
        "admin.vm.tag.Set+created-by-vm0003",
        b"",
    );
    assert!(out.status.success());
    assert!(
        out.stdout.starts_with(b"2\0PermissionDenied\0"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = qrexec("vm0003", "vm0001", "admin.vm.tag.Set+ok", b"");
    assert_eq!(out.stdout, b"0\0");
    // A policy that does not load refuses everything.
    std::fs::write(policy.join("10-broken.policy"), "admin.vm.List * vm0003\n").unwrap();
    let out = qrexec("vm0003", "@adminvm", "admin.vm.List", b"");
    assert_eq!(out.status.code(), Some(126));
    assert!(String::from_utf8_lossy(&out.stderr).contains("policy syntax error"));
}
