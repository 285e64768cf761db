//! qubesd's three sockets served without a daemon, end to end as systemd serves them: a
//! listening socket per API, each accepted connection handed to a fresh
//! `qubes-admin-call --socket-request=<api>` as its stdin and stdout (`Accept=yes`), and a client
//! that talks as `qubesadmin`'s local client and `qubesd-query` do (connect, send the request,
//! half-close, read to EOF). Also the systemd units that do this on a dom0.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod support;

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::{frame_request, show, split_frames, Sandbox, CONN};

/// A socket unit with `Accept=yes`: the listener, and the processes it started.
struct SocketUnit {
    path: PathBuf,
    children: Arc<Mutex<Vec<Child>>>,
}

impl SocketUnit {
    /// Listens on `<sandbox>/<api>.sock` and serves each connection with a fresh process.
    fn start(sb: &Sandbox, api: &str) -> SocketUnit {
        let path = sb.dir.path().join(format!("{api}.sock"));
        let listener = UnixListener::bind(&path).unwrap();
        let children = Arc::new(Mutex::new(Vec::new()));
        let template = sb.command();
        let envs: Vec<(std::ffi::OsString, std::ffi::OsString)> = template
            .get_envs()
            .filter_map(|(k, v)| Some((k.to_owned(), v?.to_owned())))
            .collect();
        let arg = format!("--socket-request={api}");
        let kids = Arc::clone(&children);
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { return };
                let input = OwnedFd::from(conn.try_clone().unwrap());
                let output = OwnedFd::from(conn);
                // A fresh Command per connection: a Command keeps its Stdio (and so the
                // connection) open until it is dropped; the child must hold the only copies.
                let child = std::process::Command::new(support::bin())
                    .env_clear()
                    .envs(envs.iter().map(|(k, v)| (k, v)))
                    .arg(&arg)
                    .stdin(Stdio::from(input))
                    .stdout(Stdio::from(output))
                    .stderr(Stdio::inherit())
                    .spawn()
                    .unwrap();
                kids.lock().unwrap().push(child);
            }
        });
        SocketUnit { path, children }
    }

    /// One request as a local client sends it; the whole reply.
    fn query(&self, request: &[u8]) -> Vec<u8> {
        let mut s = self.connect(request);
        let mut reply = Vec::new();
        s.read_to_end(&mut reply).unwrap();
        reply
    }

    fn connect(&self, request: &[u8]) -> UnixStream {
        let mut s = UnixStream::connect(&self.path).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s.write_all(request).unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        s
    }

    /// Whether every process started so far has exited, within `limit`.
    fn all_exited_within(&self, limit: Duration) -> bool {
        let t = Instant::now();
        loop {
            let running = self
                .children
                .lock()
                .unwrap()
                .iter_mut()
                .filter_map(|c| c.try_wait().unwrap().is_none().then_some(()))
                .count();
            if running == 0 {
                return true;
            }
            if t.elapsed() > limit {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for SocketUnit {
    fn drop(&mut self) {
        for c in self.children.lock().unwrap().iter_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn feature(unit: &SocketUnit, vm: &str, name: &str) -> String {
    show(&unit.query(&frame_request(
        &format!("admin.vm.feature.Get+{name}"),
        "dom0",
        vm,
        b"",
    )))
}

/// The admin socket answers a dom0 client byte for byte as `--socket-request` on a pipe does,
/// writes, and serves nothing but the Admin API.
#[test]
fn admin_socket_serves_a_dom0_client() {
    let sb = Sandbox::new("golden-10");
    let unit = SocketUnit::start(&sb, "admin");
    for req in [
        frame_request("admin.vm.List+", "dom0", "dom0", b""),
        frame_request("admin.vm.property.GetAll+", "dom0", "vm0000", b""),
        frame_request("admin.label.List+", "dom0", "dom0", b""),
        frame_request("admin.vm.property.Get+nosuch", "dom0", "vm0000", b""),
    ] {
        let direct = sb.socket_request(&req).stdout;
        assert!(direct.starts_with(b"0\0") || direct.starts_with(b"2\0"));
        assert_eq!(show(&unit.query(&req)), show(&direct));
    }
    let reply = unit.query(&frame_request(
        "admin.vm.property.Set+label",
        "dom0",
        "vm0000",
        b"blue",
    ));
    assert_eq!(reply, b"0\0");
    assert_eq!(
        unit.query(&frame_request(
            "admin.vm.property.Get+label",
            "dom0",
            "vm0000",
            b""
        )),
        b"0\0default=False type=label blue"
    );
    assert!(std::fs::read_to_string(sb.xml())
        .unwrap()
        .contains("<property name=\"label\">blue</property>"));
    assert_eq!(
        show(&unit.query(&frame_request(
            "internal.GetSystemInfo+",
            "dom0",
            "dom0",
            b""
        ))),
        "2|ProtocolError||no such method: 'internal.GetSystemInfo'|"
    );
    assert!(unit.all_exited_within(Duration::from_secs(10)));
}

/// An `admin.Events` subscriber on the socket gets its stream, and its process ends when the
/// subscriber hangs up (systemd's per-connection service then stops).
#[test]
fn events_over_the_socket_end_with_the_client() {
    let sb = Sandbox::new("golden-10");
    let unit = SocketUnit::start(&sb, "admin");
    let mut sub = unit.connect(&frame_request("admin.Events+", "dom0", "dom0", b""));
    let mut buf = Vec::new();
    let read_frames = |sub: &mut UnixStream, buf: &mut Vec<u8>, n: usize| {
        let mut chunk = [0u8; 4096];
        while split_frames(buf).len() < n {
            let k = sub.read(&mut chunk).unwrap();
            assert!(k > 0, "stream ended: {}", show(buf));
            buf.extend_from_slice(&chunk[..k]);
        }
        split_frames(buf)
    };
    assert_eq!(read_frames(&mut sub, &mut buf, 1)[0], CONN);
    assert_eq!(
        unit.query(&frame_request("admin.vm.tag.Set+t1", "dom0", "vm0001", b"")),
        b"0\0"
    );
    let frames = read_frames(&mut sub, &mut buf, 2);
    assert_eq!(show(&frames[1]), "1|vm0001|domain-tag-add:t1|tag|t1||");
    drop(sub);
    assert!(
        unit.all_exited_within(Duration::from_secs(10)),
        "the admin.Events process outlived its client"
    );
}

/// `internal.GetSystemInfo` answers the JSON the policy daemon reads, for every qube of the
/// fixture (pinned in `tests/golden/internal/GetSystemInfo-golden-10.json`; `UPDATE_GOLDEN=1`
/// rewrites it); its checks refuse other destinations and arguments; the internal socket
/// serves nothing of the Admin API; qrexec never reaches it.
#[test]
fn internal_socket_answers_the_policy_daemon() {
    let sb = Sandbox::new("golden-10");
    let unit = SocketUnit::start(&sb, "internal");
    let reply = unit.query(&frame_request(
        "internal.GetSystemInfo+",
        "dom0",
        "dom0",
        b"",
    ));
    let golden = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/golden/internal/GetSystemInfo-golden-10.json");
    let body = reply
        .strip_prefix(b"0\0")
        .unwrap_or_else(|| panic!("{}", show(&reply)));
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(golden.parent().unwrap()).unwrap();
        std::fs::write(&golden, body).unwrap();
    }
    assert_eq!(
        String::from_utf8_lossy(body),
        std::fs::read_to_string(&golden).unwrap()
    );
    let text = String::from_utf8(body.to_vec()).unwrap();
    assert!(text.starts_with("{\"domains\": {\"dom0\": {\"tags\": [], \"type\": \"AdminVM\", "));
    assert!(text.contains(
        "\"vm0000\": {\"tags\": [\"audiovm-dom0\", \"bench\", \"group-0\", \"guivm-dom0\"], \
         \"type\": \"AppVM\", \"template_for_dispvms\": false, \"default_dispvm\": \"default-dvm\", \
         \"power_state\": \"Halted\", \"uuid\": \"e4b06ce6-0741-47a8-bce4-2c8218072e8c\""
    ));
    // A tag shows at once (no cache to invalidate).
    let admin = SocketUnit::start(&sb, "admin");
    admin.query(&frame_request(
        "admin.vm.tag.Set+managed",
        "dom0",
        "vm0000",
        b"",
    ));
    let after = show(&unit.query(&frame_request(
        "internal.GetSystemInfo+",
        "dom0",
        "dom0",
        b"",
    )));
    assert!(after.contains(
        "\"vm0000\": {\"tags\": [\"audiovm-dom0\", \"bench\", \"group-0\", \"guivm-dom0\", \"managed\"]"
    ));

    assert_eq!(
        show(&unit.query(&frame_request(
            "internal.GetSystemInfo+",
            "dom0",
            "sys-net",
            b""
        ))),
        "2|PermissionDenied||internal.GetSystemInfo is a call to dom0, not to sys-net|"
    );
    assert_eq!(
        show(&unit.query(&frame_request(
            "internal.GetSystemInfo+x",
            "dom0",
            "dom0",
            b""
        ))),
        "2|PermissionDenied||internal.GetSystemInfo takes no argument|"
    );
    assert_eq!(
        show(&unit.query(&frame_request(
            "internal.GetSystemInfo+",
            "dom0",
            "dom0",
            b"x"
        ))),
        "2|ProtocolError||unexpected payload|"
    );
    assert_eq!(
        show(&unit.query(&frame_request("admin.vm.List+", "dom0", "dom0", b""))),
        "2|ProtocolError||no such method: 'admin.vm.List'|"
    );
    let exec = sb.exec_service("internal.GetSystemInfo", "dom0", "dom0", b"");
    assert_eq!(
        show(&exec.stdout),
        "2|ProtocolError||no such method: 'internal.GetSystemInfo'|"
    );
}

/// `internal.SuspendPre` / `SuspendPost` with nothing running: the list of paused qubes is
/// written (empty), and both succeed.
#[test]
fn internal_suspend_with_nothing_running() {
    let sb = Sandbox::new("golden-10");
    let unit = SocketUnit::start(&sb, "internal");
    assert_eq!(
        unit.query(&frame_request("internal.SuspendPre+", "dom0", "dom0", b"")),
        b"0\0"
    );
    assert_eq!(
        std::fs::read_to_string(sb.run_dir().join("previously-paused.list")).unwrap(),
        ""
    );
    assert_eq!(
        unit.query(&frame_request("internal.SuspendPost+", "dom0", "dom0", b"")),
        b"0\0"
    );
}

/// Writes a sandbox qube's QubesDB (what the qube's agent would have written).
fn write_qubesdb(sb: &Sandbox, vm: &str, entries: &[(&str, &str)]) {
    let dir = sb.run_dir().join("qubes-admin/qubesdb");
    std::fs::create_dir_all(&dir).unwrap();
    let mut text: Vec<String> = entries.iter().map(|(k, v)| format!("{k}={v}")).collect();
    text.sort();
    std::fs::write(dir.join(vm), text.join("\n") + "\n").unwrap();
}

/// `qubes.FeaturesRequest` on the misc socket: a template's advertised features are applied as
/// the reference's extensions apply them; unsafe values are refused with nothing changed; a
/// template-based qube's request changes nothing.
#[test]
fn misc_socket_features_request() {
    let sb = Sandbox::new("golden-10");
    let unit = SocketUnit::start(&sb, "misc");
    let admin = SocketUnit::start(&sb, "admin");
    let req = |vm: &str| frame_request("qubes.FeaturesRequest+", vm, "dom0", b"");
    // fedora-41 already has qrexec, gui, os and supported-service.qubes-update-check.
    admin.query(&frame_request(
        "admin.vm.feature.Set+gui",
        "dom0",
        "fedora-41",
        b"0",
    ));
    write_qubesdb(
        &sb,
        "fedora-41",
        &[
            ("/features-request/gui", "1"),
            ("/features-request/vmexec", "1"),
            ("/features-request/qubes-firewall", "0"),
            ("/features-request/os", "Linux"),
            ("/features-request/os-distribution", "fedora"),
            ("/features-request/supported-service.foo", "1"),
            ("/features-request/supported-service.bar", "0"),
            ("/other", "x"),
        ],
    );
    assert_eq!(show(&unit.query(&req("fedora-41"))), "0|");
    // Already set by dom0: kept.
    assert_eq!(feature(&admin, "fedora-41", "gui"), "0|0");
    assert_eq!(feature(&admin, "fedora-41", "vmexec"), "0|1");
    assert_eq!(feature(&admin, "fedora-41", "qubes-firewall"), "0|");
    assert_eq!(feature(&admin, "fedora-41", "os-distribution"), "0|fedora");
    assert_eq!(feature(&admin, "fedora-41", "supported-service.foo"), "0|1");
    // The advertised set replaces the old one.
    assert!(
        feature(&admin, "fedora-41", "supported-service.qubes-update-check")
            .starts_with("2|QubesFeatureNotFoundError|")
    );
    assert!(feature(&admin, "fedora-41", "supported-service.bar")
        .starts_with("2|QubesFeatureNotFoundError|"));
    let log = std::fs::read(sb.run_dir().join("qubes-admin/events.log")).unwrap_or_default();
    let log = show(&log);
    assert!(log.contains("features-request"), "{log}");
    assert!(log.contains("domain-feature-set:vmexec"), "{log}");

    // An unsafe value: refused, nothing applied.
    let before = std::fs::read(sb.xml()).unwrap();
    write_qubesdb(
        &sb,
        "fedora-41",
        &[
            ("/features-request/os", "Linux;rm"),
            ("/features-request/vmexec", "0"),
        ],
    );
    assert_eq!(
        show(&unit.query(&req("fedora-41"))),
        "2|PermissionDenied||qubes.FeaturesRequest from fedora-41: unsafe value of 'os'|"
    );
    assert_eq!(std::fs::read(sb.xml()).unwrap(), before);

    // From a template-based qube: its root is the template's, so nothing sticks.
    write_qubesdb(&sb, "vm0000", &[("/features-request/os", "Evil")]);
    assert_eq!(show(&unit.query(&req("vm0000"))), "0|");
    assert!(feature(&admin, "vm0000", "os").starts_with("2|QubesFeatureNotFoundError|"));

    // Only to dom0, and not on the admin socket.
    assert_eq!(
        show(&unit.query(&frame_request(
            "qubes.FeaturesRequest+",
            "fedora-41",
            "sys-net",
            b""
        ))),
        "2|PermissionDenied||qubes.FeaturesRequest is a call to dom0, not to sys-net|"
    );
    assert_eq!(
        show(&admin.query(&req("fedora-41"))),
        "2|ProtocolError||no such method: 'qubes.FeaturesRequest'|"
    );
}

/// `qubes.NotifyUpdates`, on the misc socket and as the qrexec service it is: an updateable
/// qube about itself; a template-based one about its template (only "yes", only while the
/// template is not running); a payload that is not a number is refused.
#[test]
fn notify_updates() {
    let sb = Sandbox::new("golden-10");
    let unit = SocketUnit::start(&sb, "misc");
    let admin = SocketUnit::start(&sb, "admin");
    let notify = |vm: &str, n: &[u8]| {
        show(&unit.query(&frame_request("qubes.NotifyUpdates+", vm, "dom0", n)))
    };
    assert_eq!(notify("fedora-41", b"3\n"), "0|");
    assert_eq!(feature(&admin, "fedora-41", "updates-available"), "0|1");
    assert_eq!(notify("fedora-41", b"0\n"), "0|");
    assert_eq!(feature(&admin, "fedora-41", "updates-available"), "0|");
    // vm0000 is based on fedora-41: a "no" is ignored, a "yes" is passed on.
    assert_eq!(notify("vm0000", b"0"), "0|");
    assert_eq!(feature(&admin, "fedora-41", "updates-available"), "0|");
    assert_eq!(notify("vm0000", b"12"), "0|");
    assert_eq!(feature(&admin, "fedora-41", "updates-available"), "0|1");
    assert!(
        feature(&admin, "vm0000", "updates-available").starts_with("2|QubesFeatureNotFoundError|")
    );
    assert_eq!(
        notify("sa1", b"many"),
        "2|PermissionDenied||qubes.NotifyUpdates from sa1: the payload is not a number of updates|"
    );
    // As qrexec runs it: /etc/qubes-rpc/qubes.NotifyUpdates linked to the binary.
    let out = sb.exec_service("qubes.NotifyUpdates", "sa1", "dom0", b"1\n");
    assert_eq!(show(&out.stdout), "0|");
    assert_eq!(feature(&admin, "sa1", "updates-available"), "0|1");
}

/// The systemd units in `qubes-rpc/`: one socket unit per API at qubesd's path, with qubesd's
/// owner, group and mode, `Accept=yes`, and its service running the binary for that API.
#[test]
fn systemd_units_match_the_sockets() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../qubes-rpc");
    for (unit, path, api) in [
        ("qubes-admin", "/run/qubesd.sock", "admin"),
        (
            "qubes-admin-internal",
            "/run/qubesd.internal.sock",
            "internal",
        ),
        ("qubes-admin-misc", "/run/qubesd.misc.sock", "misc"),
    ] {
        let socket = std::fs::read_to_string(dir.join(format!("{unit}.socket"))).unwrap();
        let lines: Vec<&str> = socket.lines().collect();
        for want in [
            format!("ListenStream={path}"),
            "Accept=yes".to_string(),
            "SocketUser=root".to_string(),
            "SocketGroup=qubes".to_string(),
            "SocketMode=0770".to_string(),
        ] {
            assert!(lines.contains(&want.as_str()), "{unit}.socket lacks {want}");
        }
        let service = std::fs::read_to_string(dir.join(format!("{unit}@.service"))).unwrap();
        let lines: Vec<&str> = service.lines().collect();
        for want in [
            format!("ExecStart=/usr/lib/qubes-admin/qubes-admin-call --socket-request={api}"),
            "StandardInput=socket".to_string(),
            "StandardOutput=socket".to_string(),
        ] {
            assert!(
                lines.contains(&want.as_str()),
                "{unit}@.service lacks {want}"
            );
        }
    }
}
