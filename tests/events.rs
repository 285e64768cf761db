//! `admin.Events` through the built binary in exec-service mode (as qrexec runs it): the exact
//! frames each subscription receives while a scenario of configuration calls runs (dest dom0,
//! dest one qube, a caller other than dom0), a subscriber that hangs up, and a log that
//! rotates under a subscriber.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod support;

use std::io::Read;
use std::os::fd::AsFd;
use std::process::{Child, ChildStdout, Stdio};
use std::time::{Duration, Instant};

use support::{frame_request, Sandbox};

const CONN: &[u8] = b"1\0\0connection-established\0\0";

/// One `admin.Events` process and what it has written so far.
struct Subscriber {
    child: Child,
    out: Option<ChildStdout>,
    buf: Vec<u8>,
}

impl Subscriber {
    fn new(sb: &Sandbox, src: &str, dest: &str) -> Subscriber {
        let mut c = sb.command();
        c.env("QREXEC_SERVICE_FULL_NAME", "admin.Events")
            .env("QREXEC_REMOTE_DOMAIN", src)
            .env("QREXEC_REQUESTED_TARGET_TYPE", "name")
            .env("QREXEC_REQUESTED_TARGET", dest)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = c.spawn().unwrap();
        let out = child.stdout.take().unwrap();
        let fl = nix::fcntl::fcntl(out.as_fd(), nix::fcntl::FcntlArg::F_GETFL).unwrap();
        let fl = nix::fcntl::OFlag::from_bits_truncate(fl) | nix::fcntl::OFlag::O_NONBLOCK;
        nix::fcntl::fcntl(out.as_fd(), nix::fcntl::FcntlArg::F_SETFL(fl)).unwrap();
        let mut s = Subscriber {
            child,
            out: Some(out),
            buf: Vec::new(),
        };
        // Subscribed once the first frame is out: later events reach it.
        s.wait_for(1);
        assert_eq!(s.frames()[0], CONN);
        s
    }

    fn pump(&mut self) {
        let Some(out) = self.out.as_mut() else { return };
        let mut chunk = [0u8; 65536];
        loop {
            match out.read(&mut chunk) {
                Ok(0) => return,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) => panic!("read: {e}"),
            }
        }
    }

    /// The frames received, split as a client does (a frame ends at an empty key).
    fn frames(&mut self) -> Vec<Vec<u8>> {
        self.pump();
        split_frames(&self.buf)
    }

    fn wait_for(&mut self, n: usize) -> Vec<Vec<u8>> {
        let t = Instant::now();
        loop {
            let f = self.frames();
            if f.len() >= n {
                return f;
            }
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "{} of {n} frames after 10 s: {:?}",
                f.len(),
                f.iter().map(|x| show(x)).collect::<Vec<_>>()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn show(b: &[u8]) -> String {
    String::from_utf8_lossy(b).replace('\0', "|")
}

/// `1\0subject\0event\0(key\0value\0)*\0` frames, parsed the way qubesadmin parses them.
fn split_frames(mut b: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let field = |b: &[u8], at: usize| b[at..].iter().position(|&c| c == 0).map(|p| at + p + 1);
    loop {
        let start = b;
        let Some(mut at) = (|| {
            let at = field(b, 0)?; // "1"
            let at = field(b, at)?; // subject
            field(b, at) // event
        })() else {
            return out;
        };
        loop {
            let Some(k_end) = field(b, at) else {
                return out;
            };
            if k_end == at + 1 {
                at = k_end; // empty key: end of the frame
                break;
            }
            let Some(v_end) = field(b, k_end) else {
                return out;
            };
            at = v_end;
        }
        out.push(start[..at].to_vec());
        b = &b[at..];
    }
}

fn ok(sb: &Sandbox, method: &str, dest: &str, payload: &str) {
    let out = sb.socket_request(&frame_request(method, "dom0", dest, payload.as_bytes()));
    assert!(
        out.stdout.starts_with(b"0\0"),
        "{method} {dest}: {}",
        show(&out.stdout)
    );
}

fn logged_after(sb: &Sandbox, seq: u64) -> Vec<(String, Vec<u8>)> {
    qubes_admin::events::read_after(&sb.run_dir(), seq)
        .unwrap()
        .into_iter()
        .map(|(_, e)| (e.subject.clone(), e.frame()))
        .collect()
}

fn last_seq(sb: &Sandbox) -> u64 {
    qubes_admin::events::append(&sb.run_dir(), &[]).unwrap()
}

#[test]
fn each_subscription_gets_the_frames_of_its_destination() {
    let sb = Sandbox::new_rebased("gen10", "/work/oracle-run/gen10/varlib");
    let mut all = Subscriber::new(&sb, "dom0", "dom0");
    let mut one = Subscriber::new(&sb, "dom0", "vm0001");
    let mut other = Subscriber::new(&sb, "vm0003", "dom0");
    let start = last_seq(&sb);

    ok(&sb, "admin.vm.property.Set+memory", "vm0001", "512");
    ok(&sb, "admin.vm.property.Reset+memory", "vm0001", "");
    // A global default that changes many qubes' effective netvm.
    ok(&sb, "admin.property.Set+default_netvm", "dom0", "sys-net");
    ok(&sb, "admin.vm.feature.Set+f1", "vm0001", "v1");
    ok(&sb, "admin.vm.feature.Remove+f1", "vm0001", "");
    ok(&sb, "admin.vm.tag.Set+t1", "vm0002", "");
    ok(&sb, "admin.vm.tag.Remove+t1", "vm0002", "");
    ok(&sb, "admin.label.Create+pink", "dom0", "0xff88cc");
    ok(&sb, "admin.label.Remove+pink", "dom0", "");
    ok(&sb, "admin.vm.Create.AppVM", "dom0", "name=new1 label=red");
    ok(&sb, "admin.vm.Remove", "new1", "");
    // A failing call changes nothing and logs nothing.
    let before = last_seq(&sb);
    let out = sb.socket_request(&frame_request(
        "admin.vm.property.Set+memory",
        "dom0",
        "vm0001",
        b"lots",
    ));
    assert!(out.stdout.starts_with(b"2\0"));
    assert_eq!(last_seq(&sb), before);

    let logged = logged_after(&sb, start);
    let frames = |pick: &dyn Fn(&str) -> bool| -> Vec<Vec<u8>> {
        std::iter::once(CONN.to_vec())
            .chain(
                logged
                    .iter()
                    .filter(|(s, _)| pick(s))
                    .map(|(_, f)| f.clone()),
            )
            .collect()
    };
    let want_all = frames(&|_| true);
    let want_one = frames(&|s| s == "vm0001");
    assert!(want_one.len() >= 8, "{}", want_one.len());
    assert_eq!(all.wait_for(want_all.len()), want_all);
    assert_eq!(one.wait_for(want_one.len()), want_one);
    // Exact bytes of a few, as the reference frames them.
    for f in [
        &b"1\0vm0001\0property-set:memory\0name\0memory\0newvalue\x00512\0oldvalue\x00400\0\0"[..],
        b"1\0vm0001\0domain-feature-set:f1\0feature\0f1\0value\0v1\0\0",
        b"1\0vm0002\0domain-tag-add:t1\0tag\0t1\0\0",
        b"1\0\0domain-add\0vm\0new1\0\0",
        b"1\0\0property-set:default_netvm\0name\0default_netvm\0newvalue\0sys-net\0oldvalue\0sys-firewall\0\0",
    ] {
        assert!(want_all.iter().any(|x| x == f), "missing {}", show(f));
    }
    // The qube subscription sees none of the other qubes' or the system's events.
    assert!(one
        .frames()
        .iter()
        .skip(1)
        .all(|f| f.starts_with(b"1\0vm0001\0")));
    // A caller other than dom0 sees nothing of the system until the policy filter exists.
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(other.frames(), [CONN.to_vec()]);
    // Nothing more arrives, and nothing twice.
    assert_eq!(all.frames(), want_all);
}

#[test]
fn a_subscriber_whose_caller_hangs_up_exits() {
    let sb = Sandbox::new("gen10");
    let mut s = Subscriber::new(&sb, "dom0", "dom0");
    s.out = None; // the caller goes away while no event comes
    let t = Instant::now();
    while s.child.try_wait().unwrap().is_none() {
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "admin.Events still runs 2 s after its caller left"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // And one that has gone away while events flow.
    let mut s = Subscriber::new(&sb, "dom0", "dom0");
    ok(&sb, "admin.vm.tag.Set+t1", "vm0002", "");
    s.wait_for(2);
    s.out = None;
    ok(&sb, "admin.vm.tag.Remove+t1", "vm0002", "");
    let t = Instant::now();
    while s.child.try_wait().unwrap().is_none() {
        assert!(t.elapsed() < Duration::from_secs(2));
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_rotating_log_loses_and_repeats_nothing() {
    let sb = Sandbox::new("gen10");
    let mut s = Subscriber::new(&sb, "dom0", "dom0");
    let start = last_seq(&sb);
    for i in 0..30 {
        let mut c = sb.command();
        c.arg("--socket-request")
            .env("QUBES_EVENT_LOG_MAX_BYTES", "400");
        let out = support::run(
            c,
            &frame_request(&format!("admin.vm.tag.Set+t{i}"), "dom0", "vm0002", b""),
        );
        assert_eq!(out.stdout, b"0\0");
    }
    assert!(qubes_admin::events::log::rotated_path(&sb.run_dir()).exists());
    let want: Vec<Vec<u8>> = (0..30)
        .map(|i| format!("1\0vm0002\0domain-tag-add:t{i}\0tag\0t{i}\0\0").into_bytes())
        .collect();
    let got = s.wait_for(31);
    assert_eq!(got[1..], want[..]);
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(s.frames().len(), 31);
    assert_eq!(last_seq(&sb), start + 30);
}
