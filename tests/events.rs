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

use std::time::{Duration, Instant};

use support::{frame_request, show, Sandbox, Subscriber, CONN};

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
    // vm0003's policy: every event of vm0001, and one kind of system event.
    std::fs::write(
        sb.policy_dir().join("30-events.policy"),
        "admin.Events * vm0003 vm0001 allow target=dom0\n\
         admin.Events +property-set_default_netvm vm0003 @adminvm allow target=dom0\n",
    )
    .unwrap();
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
    // A caller other than dom0 gets what its policy allows, event by event.
    let want_other: Vec<Vec<u8>> = frames(&|s| s == "vm0001" || s.is_empty())
        .into_iter()
        .filter(|f| {
            f == CONN
                || !f.starts_with(b"1\0\0")
                || f.starts_with(b"1\0\0property-set:default_netvm\0")
        })
        .collect();
    assert!(want_other.len() >= 9, "{}", want_other.len());
    assert_eq!(other.wait_for(want_other.len()), want_other);
    // Nothing more arrives, and nothing twice.
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(all.frames(), want_all);
    assert_eq!(other.frames(), want_other);
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
