//! Conformance cases for the policy engine (`qrexec-and-policy.md` §2), in a compact text
//! form: each block is a policy and the verdicts of requests against it, on one fixed system.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use super::*;

fn system() -> Vec<DomainInfo> {
    let d =
        |name: &str, uuid: &str, class: &str, tags: &[&str], dvm: bool, default: Option<&str>| {
            DomainInfo {
                name: name.into(),
                uuid: uuid.into(),
                class: class.into(),
                tags: tags.iter().map(|t| t.to_string()).collect(),
                template_for_dispvms: dvm,
                default_dispvm: default.map(str::to_string),
                internal: name == "fedora",
            }
        };
    vec![
        d(
            "dom0",
            DOM0_UUID,
            "AdminVM",
            &["dom0-tag"],
            false,
            Some("default-dvm"),
        ),
        d(
            "work",
            "11111111-1111-1111-1111-111111111111",
            "AppVM",
            &["managed"],
            false,
            Some("default-dvm"),
        ),
        d(
            "personal",
            "22222222-2222-2222-2222-222222222222",
            "AppVM",
            &[],
            false,
            None,
        ),
        d(
            "mgmt",
            "33333333-3333-3333-3333-333333333333",
            "AppVM",
            &["mgmt-tag"],
            false,
            None,
        ),
        d(
            "default-dvm",
            "44444444-4444-4444-4444-444444444444",
            "AppVM",
            &["dvm-tag"],
            true,
            Some("default-dvm"),
        ),
        d(
            "other-dvm",
            "55555555-5555-5555-5555-555555555555",
            "AppVM",
            &[],
            true,
            None,
        ),
        d(
            "disp12",
            "66666666-6666-6666-6666-666666666666",
            "DispVM",
            &[],
            false,
            Some("default-dvm"),
        ),
        d(
            "fedora",
            "77777777-7777-7777-7777-777777777777",
            "TemplateVM",
            &[],
            false,
            None,
        ),
        d(
            "sys-net",
            "88888888-8888-8888-8888-888888888888",
            "AppVM",
            &["managed"],
            false,
            None,
        ),
        d(
            "untrusted",
            "99999999-9999-9999-9999-999999999999",
            "StandaloneVM",
            &["managed", "internal-ish"],
            false,
            None,
        ),
    ]
}

fn running(name: &str) -> bool {
    matches!(name, "dom0" | "work" | "sys-net")
}

/// Renders a verdict compactly: `allow TARGET [user=U] [notify] [noautostart]`,
/// `ask T1,T2 [default=D]`, `deny [quiet]`.
fn show(v: &Verdict) -> String {
    match v {
        Verdict::Allow {
            target,
            user,
            notify,
            autostart,
        } => {
            let mut s = format!("allow {target}");
            if let Some(u) = user {
                s.push_str(&format!(" user={u}"));
            }
            if *notify {
                s.push_str(" notify");
            }
            if !autostart {
                s.push_str(" noautostart");
            }
            s
        }
        Verdict::Ask {
            targets,
            default_target,
            ..
        } => {
            let mut s = format!("ask {}", targets.join(","));
            if let Some(d) = default_target {
                s.push_str(&format!(" default={d}"));
            }
            s
        }
        Verdict::Deny { notify, .. } => {
            if *notify {
                "deny".to_string()
            } else {
                "deny quiet".to_string()
            }
        }
    }
}

/// The cases: blocks separated by lines of `---`. A block is policy text, a line `==`, then
/// requests `SERVICE+ARG SOURCE TARGET => VERDICT` (TARGET `''` for empty), or the single
/// line `=> error` when the policy must not load. Files a block needs (includes) are written
/// first from lines `file NAME` … `end`.
const CASES: &str = r#"
# First match wins; no match denies.
admin.vm.List * mgmt @adminvm allow target=dom0
admin.vm.List * mgmt @anyvm deny
==
admin.vm.List+ mgmt dom0 => allow dom0
admin.vm.List+ mgmt @adminvm => allow dom0
admin.vm.List+ mgmt work => deny
admin.vm.List+ work dom0 => deny
admin.vm.Start+ mgmt dom0 => deny
---
# @anyvm is everything but dom0, and it matches the keywords.
* * @anyvm @anyvm allow
==
qubes.Filecopy+ work personal => allow personal
qubes.Filecopy+ work dom0 => deny
qubes.Filecopy+ dom0 work => deny
qubes.Filecopy+ work @dispvm => allow @dispvm:default-dvm
qubes.Filecopy+ work @dispvm:other-dvm => allow @dispvm:other-dvm
qubes.Filecopy+ personal @dispvm => deny
qubes.Filecopy+ work '' => deny
qubes.Filecopy+ work @default => deny
qubes.Filecopy+ work nonexistent => deny
qubes.Filecopy+ work @dispvm:personal => deny
qubes.Filecopy+ work @dispvm:nonexistent => deny
---
# * matches dom0 and keywords too; dom0's three names are one.
* * * * allow
==
qubes.X+ dom0 dom0 => allow dom0
qubes.X+ work @adminvm => allow dom0
qubes.X+ work uuid:00000000-0000-0000-0000-000000000000 => allow dom0
qubes.X+ work uuid:22222222-2222-2222-2222-222222222222 => allow personal
qubes.X+ work @default => deny
---
# @default needs a redirect; with one it is the redirect.
qubes.Y * work @default allow target=personal
qubes.Y * work @default ask default_target=sys-net
qubes.Z * work @default ask target=sys-net
==
qubes.Y+ work '' => allow personal
qubes.Y+ work @default => allow personal
qubes.Y+ work nonexistent => allow personal
qubes.Z+ work '' => ask sys-net
---
X * work @default allow
==
=> error
---
# Arguments: + alone is the empty argument only; * any.
qubes.Arg +one work @anyvm allow
qubes.Arg + work @anyvm allow target=sys-net
qubes.Arg * work @anyvm deny notify=no
==
qubes.Arg+one work personal => allow personal
qubes.Arg+ work personal => allow sys-net
qubes.Arg+two work personal => deny quiet
qubes.Arg+ONE work personal => deny quiet
---
# Sources: names, uuid aliases, tags, types, dom0's forms.
s * work @anyvm allow
s * uuid:22222222-2222-2222-2222-222222222222 @anyvm allow target=sys-net
s * @tag:mgmt-tag @anyvm allow target=fedora
s * @type:TemplateVM @anyvm allow target=work
s * @type:StandaloneVM @anyvm allow target=mgmt
s * @adminvm @anyvm allow target=personal
s * @anyvm @anyvm deny
==
s+ work sys-net => allow sys-net
s+ personal work => allow sys-net
s+ mgmt work => allow fedora
s+ fedora work => allow work
s+ untrusted work => allow mgmt
s+ dom0 work => allow personal
s+ disp12 work => deny
s+ sys-net work => deny
---
# Targets: @tag and @type match dom0 by name or uuid, but not the keyword @adminvm.
t * work @tag:dom0-tag allow
t * work @type:AdminVM allow target=sys-net
t * work @anyvm deny
t * work @adminvm allow target=personal
==
t+ work dom0 => allow dom0
t+ work uuid:00000000-0000-0000-0000-000000000000 => allow dom0
t+ work @adminvm => allow personal
t+ work managed => deny
---
t * work @tag:managed allow
t * work @type:TemplateVM allow
t * work @anyvm deny
==
t+ work sys-net => allow sys-net
t+ work untrusted => allow untrusted
t+ work fedora => allow fedora
t+ work personal => deny
t+ work @dispvm => deny
t+ work uuid:88888888-8888-8888-8888-888888888888 => allow sys-net
---
# A literal name matches the qube's uuid alias, and the reverse.
n * work personal allow
n * work uuid:88888888-8888-8888-8888-888888888888 allow
==
n+ work uuid:22222222-2222-2222-2222-222222222222 => allow personal
n+ work sys-net => allow sys-net
n+ work UUID:88888888-8888-8888-8888-888888888888 => deny
n+ work fedora => deny
---
# Disposables.
d * work @dispvm allow
d * work @dispvm:other-dvm allow
d * personal @dispvm:@tag:dvm-tag allow
d * mgmt @dispvm:default-dvm allow
d * @anyvm @anyvm deny
==
d+ work @dispvm => allow @dispvm:default-dvm
d+ work @dispvm:other-dvm => allow @dispvm:other-dvm
d+ work @dispvm:default-dvm => deny
d+ work default-dvm => deny
d+ personal @dispvm:default-dvm => allow @dispvm:default-dvm
d+ personal @dispvm:other-dvm => deny
d+ personal @dispvm => deny
d+ mgmt @dispvm:default-dvm => allow @dispvm:default-dvm
d+ mgmt @dispvm => deny
---
# @dispvm:NAME also matches @dispvm when NAME is the caller's default.
d * work @dispvm:default-dvm allow
d * disp12 @dispvm:@tag:dvm-tag allow target=@dispvm:other-dvm
==
d+ work @dispvm => allow @dispvm:default-dvm
d+ disp12 @dispvm => allow @dispvm:other-dvm
d+ work @dispvm:other-dvm => deny
---
# Redirects: target= to dom0's forms, a dispvm, a qube that does not exist.
r +a work @anyvm allow target=@adminvm
r +b work @anyvm allow target=uuid:00000000-0000-0000-0000-000000000000
r +c work @anyvm allow target=@dispvm
r +d work @anyvm allow target=nonexistent
r +e personal @anyvm allow target=@dispvm
r +f work @anyvm allow target=@dispvm:personal
r +g work @anyvm allow user=root target=dom0 notify=yes
==
r+a work personal => allow dom0
r+b work personal => allow dom0
r+c work personal => allow @dispvm:default-dvm
r+d work personal => deny
r+e personal work => deny
r+f work personal => deny
r+g work personal => allow dom0 user=root notify
---
# autostart=no: only dom0 or a running qube; a new disposable never runs.
a +1 mgmt @anyvm allow autostart=no
a +2 mgmt @anyvm allow autostart=no target=dom0
a +3 mgmt @anyvm allow autostart=no target=@dispvm:other-dvm
==
a+1 mgmt work => allow work noautostart
a+1 mgmt personal => deny
a+2 mgmt personal => allow dom0 noautostart
a+3 mgmt personal => deny
---
# deny notifies unless notify=no; allow and ask do not unless notify=yes.
q +1 work @anyvm deny
q +2 work @anyvm deny notify=no
q +3 work @anyvm allow notify=no
q +4 work @anyvm allow notify=yes
==
q+1 work personal => deny
q+2 work personal => deny quiet
q+3 work personal => allow personal
q+4 work personal => allow personal notify
---
# ask: the choices from the later rules (denies remove), the source and missing qubes left out.
ask * work @default ask default_target=personal
ask * work sys-net deny
ask * work @tag:managed allow
ask * work personal ask
ask * work @dispvm allow
==
ask+ work '' => ask @dispvm:default-dvm,personal,untrusted default=personal
---
# Later denies do not remove what an earlier rule allows (first match wins).
ask * work @default ask
ask * work @tag:managed allow
ask * work sys-net deny
==
ask+ work '' => ask sys-net,untrusted
---
ask * work @anyvm ask target=sys-net default_target=sys-net
ask * mgmt @anyvm ask default_target=personal
ask * personal @anyvm ask
ask * personal @anyvm deny
==
ask+ work fedora => ask sys-net default=sys-net
# (fedora has the `internal` feature: never offered)
ask+ mgmt '' => ask @dispvm:default-dvm,@dispvm:other-dvm,default-dvm,disp12,other-dvm,personal,sys-net,untrusted,work default=personal
ask+ personal work => ask @dispvm:default-dvm,@dispvm:other-dvm,default-dvm,disp12,mgmt,other-dvm,sys-net,untrusted,work
---
ask * mgmt @anyvm ask default_target=nonexistent
ask * mgmt @adminvm ask
==
ask+ mgmt work => ask @dispvm:default-dvm,@dispvm:other-dvm,default-dvm,disp12,dom0,other-dvm,personal,sys-net,untrusted,work
---
# Syntax errors fail the whole policy.
qubes.A * work @anyvm allow # comment
==
=> error
---
qubes.A * work @anyvm allow,target=dom0
==
=> error
---
qubes.A * work @anyvm allow target=dom0 target=dom0
==
=> error
---
qubes.A * work @anyvm deny target=dom0
==
=> error
---
qubes.A * work @anyvm allow default_target=dom0
==
=> error
---
qubes.A * work @anyvm allow notify=true
==
=> error
---
qubes.A * work @anyvm allow autostart=
==
=> error
---
qubes.A * work @anyvm permit
==
=> error
---
qubes.A * work @anyvm
==
=> error
---
qubes+A * work @anyvm allow
==
=> error
---
* +arg work @anyvm allow
==
=> error
---
qubes.A arg work @anyvm allow
==
=> error
---
qubes.A * @default @anyvm allow
==
=> error
---
qubes.A * @dispvm @anyvm allow
==
=> error
---
qubes.A * work @anyvm allow target=@anyvm
==
=> error
---
qubes.A * work @anyvm allow target=@tag:x
==
=> error
---
qubes.A * work @anyvm allow target=@default
==
=> error
---
qubes.A * work @foo allow
==
=> error
---
qubes.A * work @tag: allow
==
=> error
---
!unknown-directive
==
=> error
---
!include does-not-exist
==
=> error
---
!include-service qubes.A *
==
=> error
---
# A source of @dispvm:NAME never matches a plain caller.
qubes.B * @dispvm:default-dvm @anyvm allow
qubes.B * @dispvm:@tag:dvm-tag @anyvm allow
==
qubes.B+ disp12 work => deny
qubes.B+ default-dvm work => deny
---
# Includes: new format, a directory, legacy service files (with $ and commas), nesting.
file inc/new
qubes.I * work @anyvm allow target=sys-net
end
file inc.d/10-a.policy
qubes.J * work @anyvm allow target=fedora
end
file inc.d/20-b.policy
qubes.J * work @anyvm deny
qubes.K * work @anyvm allow target=personal
end
file inc.d/README
garbage that is not read
end
file legacy/admin-rwx
# comment
mgmt $tag:managed allow,target=dom0
$include:legacy/admin-more
end
file legacy/admin-more
mgmt @anyvm deny,notify=no
$anyvm $adminvm allow
end
!include inc/new
!include-dir inc.d
!include-service admin.vm.Start * legacy/admin-rwx
!include-service admin.vm.List + legacy/admin-rwx
==
qubes.I+ work personal => allow sys-net
qubes.J+ work personal => allow fedora
qubes.K+ work personal => allow personal
admin.vm.Start+ mgmt work => allow dom0
admin.vm.Start+ mgmt personal => deny quiet
admin.vm.Start+ work dom0 => allow dom0
admin.vm.List+ mgmt sys-net => allow dom0
admin.vm.List+x mgmt sys-net => deny
admin.vm.Kill+ mgmt work => deny
---
# A legacy file allows only !include.
file legacy/bad
!include-dir inc.d
end
!include-service admin.vm.Start * legacy/bad
==
=> error
---
file legacy/badline
work @anyvm
end
!include-service admin.vm.Start * legacy/badline
==
=> error
---
# A self-include is an error here (the reference recurses until Python gives up).
file loop/self
!include loop/self
end
!include loop/self
==
=> error
---
# A bad file name in an included directory fails everything.
file incbad.d/Bad.policy
qubes.A * work @anyvm allow
end
!include-dir incbad.d
==
=> error
"#;

fn write_files(dir: &std::path::Path, block: &str) -> String {
    let mut policy = String::new();
    let mut lines = block.lines();
    while let Some(line) = lines.next() {
        if let Some(name) = line.strip_prefix("file ") {
            let path = dir.join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            let mut text = String::new();
            for l in lines.by_ref() {
                if l == "end" {
                    break;
                }
                text.push_str(l);
                text.push('\n');
            }
            std::fs::write(path, text).unwrap();
        } else {
            policy.push_str(line);
            policy.push('\n');
        }
    }
    policy
}

#[test]
fn conformance_cases() {
    let domains = system();
    let sys = SystemInfo {
        domains: &domains,
        is_running: &running,
    };
    let mut count = 0;
    for (bi, block) in CASES.split("\n---\n").enumerate() {
        let tmp = tempfile::tempdir().unwrap();
        let (head, cases) = block.split_once("\n==\n").expect("block without ==");
        let policy = write_files(tmp.path(), head);
        let loaded = parse_text(&policy, tmp.path(), &tmp.path().join("compat"));
        for case in cases
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        {
            count += 1;
            if case == "=> error" {
                assert!(loaded.is_err(), "block {bi}: loaded: {policy}");
                continue;
            }
            let rules = loaded
                .as_ref()
                .unwrap_or_else(|e| panic!("block {bi}: {e}\n{policy}"));
            let (req, want) = case.split_once(" => ").unwrap();
            let f: Vec<&str> = req.split(' ').collect();
            let (service, arg) = f[0].split_once('+').unwrap();
            let request = Request {
                service: service.into(),
                argument: format!("+{arg}"),
                source: f[1].into(),
                target: if f[2] == "''" {
                    String::new()
                } else {
                    f[2].into()
                },
            };
            let got = show(&evaluate(rules, &request, &sys));
            assert_eq!(got, want, "block {bi}: {case}");
        }
    }
    assert!(count >= 120, "{count} cases");
}

/// The policy directories: merged by basename (the first directory wins), C order, only valid
/// `*.policy` names, a missing directory or a bad name fails; `!compat-4.0` reads the R4.0
/// files in their order with the implicit denies after each specific-argument file.
#[test]
fn directories_and_compat() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run/policy.d");
    let etc = tmp.path().join("etc/policy.d");
    let compat = tmp.path().join("etc/qubes-rpc/policy");
    for d in [&run, &etc, &compat] {
        std::fs::create_dir_all(d).unwrap();
    }
    let w = |p: &std::path::Path, t: &str| std::fs::write(p, t).unwrap();
    w(
        &etc.join("30-user.policy"),
        "qubes.A * work @anyvm allow target=fedora\n",
    );
    w(
        &run.join("30-user.policy"),
        "qubes.A * work @anyvm allow target=sys-net\n",
    );
    w(&etc.join("20-early.policy"), "qubes.B * work @anyvm deny\n");
    w(&etc.join("35-compat.policy"), "!compat-4.0\n");
    w(&etc.join("README"), "not a policy\n");
    w(&etc.join(".hidden.policy"), "garbage\n");
    w(&etc.join("x.policy.swp"), "garbage\n");
    w(
        &compat.join("qubes.C+one"),
        "work @anyvm allow,target=personal\n",
    );
    w(&compat.join("qubes.C"), "work $anyvm allow,target=fedora\n");
    w(&compat.join("qubes.C.rpmnew"), "garbage\n");
    w(&compat.join(".qubes.C"), "garbage\n");
    w(
        &etc.join("90-default.policy"),
        "qubes.C * work @anyvm allow target=mgmt\n",
    );
    let src = Sources {
        dirs: vec![run.clone(), etc.clone()],
        compat_dir: compat.clone(),
    };
    let rules = load(&src).unwrap();
    let domains = system();
    let sys = SystemInfo {
        domains: &domains,
        is_running: &running,
    };
    let v = |s: &str, a: &str, src_vm: &str, t: &str| {
        show(&evaluate(
            &rules,
            &Request {
                service: s.into(),
                argument: a.into(),
                source: src_vm.into(),
                target: t.into(),
            },
            &sys,
        ))
    };
    assert_eq!(v("qubes.A", "+", "work", "personal"), "allow sys-net");
    assert_eq!(v("qubes.B", "+", "work", "personal"), "deny");
    assert_eq!(v("qubes.C", "+one", "work", "sys-net"), "allow personal");
    // The implicit denies after the specific file: nothing later applies to `+one`.
    assert_eq!(v("qubes.C", "+one", "mgmt", "sys-net"), "deny");
    assert_eq!(v("qubes.C", "+one", "mgmt", "dom0"), "deny");
    assert_eq!(v("qubes.C", "+two", "work", "sys-net"), "allow fedora");
    assert_eq!(v("qubes.C", "+", "mgmt", "sys-net"), "deny");
    // Rule origins: the files in C order, the run directory's copy of 30-user.
    let files: Vec<String> = rules
        .iter()
        .map(|r| {
            r.origin
                .0
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    assert_eq!(
        files,
        [
            "20-early.policy",
            "30-user.policy",
            "qubes.C+one",
            "qubes.C+one",
            "qubes.C+one",
            "qubes.C",
            "90-default.policy"
        ]
    );
    assert!(rules[1].origin.0.starts_with(&run));
    // A bad file name, a missing directory: nothing loads.
    w(&run.join("Bad.policy"), "\n");
    assert!(load(&src).is_err());
    std::fs::remove_file(run.join("Bad.policy")).unwrap();
    let missing = Sources {
        dirs: vec![tmp.path().join("nope"), etc],
        compat_dir: compat,
    };
    assert!(matches!(load(&missing), Err(PolicyError::Io { .. })));
}

/// The `admin.Events` filter: the argument is the event with `:` as `_`, the target the
/// subject, else the `vm` argument, else `@adminvm`.
#[test]
fn event_filter() {
    let tmp = tempfile::tempdir().unwrap();
    let rules = parse_text(
        "admin.Events * mgmt @tag:managed allow target=dom0\n\
         admin.Events +domain-add mgmt personal allow target=dom0\n\
         admin.Events +property-set_default_netvm mgmt @adminvm allow target=dom0\n\
         admin.Events * mgmt @anyvm deny\n",
        tmp.path(),
        tmp.path(),
    )
    .unwrap();
    let f = EventFilter {
        rules,
        domains: system(),
        source: "mgmt".into(),
    };
    assert!(f.allows("work", "domain-start", None));
    assert!(f.allows("sys-net", "property-set:netvm", None));
    assert!(!f.allows("personal", "domain-start", None));
    assert!(f.allows("", "domain-add", Some("personal")));
    assert!(!f.allows("", "domain-add", Some("fedora")));
    assert!(f.allows("", "property-set:default_netvm", None));
    assert!(!f.allows("", "property-set:default_kernel", None));
    // A qube unknown when the stream began is `@default`: `@anyvm` would match it, tags not.
    assert!(!f.allows("new1", "domain-start", None));
}
