//! admin.vm.List: `<name> class=<Class> state=<State> uuid=<uuid>\n` per qube, the AdminVM
//! first, then by name in byte order.
//!
//! Power states come from the hypervisor helper's cache (see docs/runtime.md); the runtime is
//! queried only when a listed qube can be anything but `Running`.

use crate::error::ApiError;
use crate::model::access;
use crate::model::context::Ctx;
use crate::model::power_state::{always_running, vm_power_state, vm_uuid};
use crate::store::DomId;

/// The reference's order: the AdminVM first, then by name (plain code-point order).
fn sort_key<'d>(ctx: &'d Ctx<'_>, id: DomId) -> (bool, &'d [u8]) {
    let doc = ctx.doc();
    (doc.class(id) != "AdminVM", doc.name(id).as_bytes())
}

pub fn list(ctx: &mut Ctx<'_>) -> Result<Vec<u8>, ApiError> {
    let candidates = if ctx.dest_is_admin() {
        ctx.doc().domains()
    } else {
        vec![ctx.dest]
    };
    // A caller other than dom0 sees what the qrexec policy lets it list (§3.4).
    let mut ids = access::visible(ctx, "admin.vm.List", candidates)?;
    ids.sort_by(|a, b| sort_key(ctx, *a).cmp(&sort_key(ctx, *b)));

    let doc = ctx.doc();
    let needs_runtime = ids.iter().any(|id| !always_running(doc.class(*id)));
    let runtime = if needs_runtime {
        Some(ctx.runtime()?)
    } else {
        None
    };

    let mut out = String::new();
    for id in ids {
        let uuid = vm_uuid(ctx, id)?;
        let dom = runtime.and_then(|rt| rt.by_uuid(&uuid));
        let state = vm_power_state(ctx, id, dom)?;
        out.push_str(&format!(
            "{} class={} state={} uuid={}\n",
            doc.name(id),
            doc.class(id),
            state.as_str(),
            uuid
        ));
    }
    Ok(out.into_bytes())
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]
mod tests {
    use crate::runtime::{DomState, DomainRuntime, Fixed, HostInfo, Runtime, Unavailable};
    use crate::wire::{RawRequest, Target};
    use crate::{Config, System};

    const FIXTURE: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/fixtures/gen10/qubes.xml"
    );

    fn dom(name: &str, uuid: &str, state: DomState, active: bool) -> DomainRuntime {
        DomainRuntime {
            name: name.into(),
            uuid: uuid.into(),
            id: if active { 2 } else { -1 },
            state,
            active,
            mem_kib: 0,
            max_mem_kib: 0,
            vcpus: 1,
            cpu_time_ns: 0,
        }
    }

    fn call(
        hv: Box<dyn crate::runtime::Hypervisor>,
        run: &std::path::Path,
        src: &str,
        dest: &str,
    ) -> Vec<u8> {
        // The policy: vm0001 may list itself and the qubes tagged `listable` (none in this
        // fixture), nothing else.
        let policy = run.join("etc-policy.d");
        std::fs::create_dir_all(&policy).unwrap();
        std::fs::write(
            policy.join("30-test.policy"),
            "admin.vm.List * vm0001 vm0001 allow target=dom0\n\
             admin.vm.List * vm0001 @tag:listable allow target=dom0\n",
        )
        .unwrap();
        let config = Config {
            xml_path: FIXTURE.into(),
            run_dir: run.to_path_buf(),
            policy_dir: policy,
            ..Config::default()
        };
        let mut sys = System::with_hypervisor(config, hv);
        sys.call(&RawRequest {
            method: b"admin.vm.List".to_vec(),
            arg: Vec::new(),
            src: src.as_bytes().to_vec(),
            target: Target::Name(dest.as_bytes().to_vec()),
            payload: Vec::new(),
        })
    }

    #[test]
    fn states_order_and_filters() {
        let run = tempfile::tempdir().unwrap();
        std::fs::write(run.path().join("qrexec.sys-net"), b"").unwrap();
        let rt = Runtime {
            host: HostInfo {
                memory_mib: 3072,
                cpus: 16,
            },
            domains: vec![
                dom(
                    "sys-net",
                    "1e2feb89-414c-443c-9027-c4d1c386bbc4",
                    DomState::Running,
                    true,
                ),
                dom(
                    "sys-firewall",
                    "78e51061-7311-48a3-82ce-6f447ed4d57b",
                    DomState::Running,
                    true,
                ),
                dom(
                    "vm0001",
                    "9b810e76-6ec9-4286-a3ca-828dd5f4b3b2",
                    DomState::Paused,
                    true,
                ),
                dom(
                    "vm0002",
                    "b2221a58-008a-45a6-8464-7159c324c985",
                    DomState::Shutoff,
                    true,
                ),
                dom(
                    "vm0003",
                    "cd447e35-b8b6-48fe-842e-3d437204e52d",
                    DomState::Running,
                    false,
                ),
                dom(
                    "stray",
                    "11111111-2222-3333-4444-555555555555",
                    DomState::Running,
                    true,
                ),
            ],
        };
        let out = String::from_utf8(call(
            Box::new(Fixed {
                runtime: rt.clone(),
            }),
            run.path(),
            "dom0",
            "dom0",
        ))
        .unwrap();
        let lines: Vec<&str> = out.trim_start_matches("0\0").lines().collect();
        assert_eq!(lines.len(), 15);
        assert_eq!(
            lines[0],
            "dom0 class=AdminVM state=Running uuid=00000000-0000-0000-0000-000000000000"
        );
        let names: Vec<&str> = lines.iter().map(|l| l.split(' ').next().unwrap()).collect();
        let mut sorted = names[1..].to_vec();
        sorted.sort_unstable();
        assert_eq!(names[1..], sorted[..]);
        let state = |n: &str| {
            let l = lines
                .iter()
                .find(|l| l.starts_with(&format!("{n} ")))
                .unwrap();
            l.split(' ').nth(2).unwrap().to_string()
        };
        assert_eq!(state("sys-net"), "state=Running");
        assert_eq!(state("sys-firewall"), "state=Transient");
        assert_eq!(state("vm0001"), "state=Paused");
        assert_eq!(state("vm0002"), "state=Dying");
        assert_eq!(state("vm0003"), "state=Halted");
        assert_eq!(state("vm0004"), "state=Halted");

        // One qube; and the policy's filter for a caller other than dom0.
        let one = call(
            Box::new(Fixed {
                runtime: rt.clone(),
            }),
            run.path(),
            "dom0",
            "vm0001",
        );
        assert_eq!(
            one,
            b"0\0vm0001 class=AppVM state=Paused uuid=9b810e76-6ec9-4286-a3ca-828dd5f4b3b2\n"
        );
        let own = call(
            Box::new(Fixed {
                runtime: rt.clone(),
            }),
            run.path(),
            "vm0001",
            "vm0001",
        );
        assert_eq!(own, one);
        assert_eq!(
            call(
                Box::new(Fixed {
                    runtime: rt.clone()
                }),
                run.path(),
                "vm0001",
                "dom0"
            ),
            one
        );
        assert_eq!(
            call(
                Box::new(Fixed { runtime: rt }),
                run.path(),
                "vm0002",
                "vm0001"
            ),
            b"0\0"
        );
    }

    #[test]
    fn runtime_errors_are_reported_and_dom0_alone_needs_none() {
        let run = tempfile::tempdir().unwrap();
        let down = || {
            Box::new(Unavailable {
                reason: "libvirt is down".into(),
            })
        };
        let out = call(down(), run.path(), "dom0", "dom0");
        assert_eq!(
            out,
            b"2\0QubesException\0\0hypervisor unavailable: libvirt is down\0"
        );
        // A caller the policy shows nothing: nothing is queried.
        assert_eq!(call(down(), run.path(), "vm0002", "dom0"), b"0\0");
        // A policy that does not load: a clear refusal, not an empty list.
        std::fs::write(run.path().join("etc-policy.d/10-bad.policy"), "garbage\n").unwrap();
        let out = String::from_utf8(call(down(), run.path(), "vm0002", "dom0")).unwrap();
        assert!(
            out.starts_with("2\0PermissionDenied\0\0the qrexec policy could not be loaded"),
            "{out}"
        );
    }
}
