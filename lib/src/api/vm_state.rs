//! admin.vm.CurrentState (the power-state rules themselves: `model::power_state`).

use crate::error::ApiError;
use crate::model::context::Ctx;
use crate::model::power_state::{vm_power_state, vm_uuid, PowerState};
use crate::store::DomId;

/// The effective `maxmem` (MiB), through the property engine (stored value or default rule).
fn maxmem_mib(ctx: &Ctx<'_>, id: DomId) -> Result<u64, ApiError> {
    use crate::model::props::{defaults, value::Val, ReadErr};
    match defaults::vm_prop(ctx, id, "maxmem", 0) {
        Ok(Val::Int(n)) => Ok(u64::try_from(n).unwrap_or(0)),
        Ok(_) => Err(ApiError::qubes(format!(
            "maxmem of '{}' is not an integer",
            ctx.doc().name(id)
        ))),
        Err(ReadErr::Unset) => Err(ApiError::qubes(format!(
            "maxmem of '{}' has no value",
            ctx.doc().name(id)
        ))),
        Err(ReadErr::Api(e)) => Err(e),
    }
}

/// The reply text.
pub fn format_state(mem: u64, mem_static_max: u64, cputime: u64, st: PowerState) -> String {
    format!(
        "mem={mem} mem_static_max={mem_static_max} cputime={cputime} power_state={}",
        st.as_str()
    )
}

pub fn current_state(ctx: &mut Ctx<'_>) -> Result<Vec<u8>, ApiError> {
    let id = ctx.dest;
    let class = ctx.doc().class(id);
    if class == "RemoteVM" {
        return Ok(format_state(0, 0, 0, PowerState::Running).into_bytes());
    }
    let uuid = vm_uuid(ctx, id)?;
    let dom = ctx.hypervisor().domain(&uuid)?;
    if class == "AdminVM" {
        // dom0's libvirt domain is ID 0 on Xen. Drivers without one (test, QEMU: a sandbox)
        // make the host itself dom0: its memory, no CPU time of its own. (The reference fails
        // without a reply there, which breaks `qvm-ls` MEMORY.)
        let max = maxmem_mib(ctx, id)?.saturating_mul(1024);
        let (mem, cputime) = match dom.filter(|d| d.active) {
            Some(d) => (d.mem_kib, d.cpu_time_ns),
            None => (ctx.runtime()?.host.memory_mib.saturating_mul(1024), 0),
        };
        return Ok(format_state(mem, max, cputime, PowerState::Running).into_bytes());
    }
    let st = vm_power_state(ctx, id, dom.as_ref())?;
    let reply = match dom.filter(|d| d.active) {
        None => format_state(0, 0, 0, st),
        Some(d) => {
            let max = maxmem_mib(ctx, id)?.saturating_mul(1024);
            format_state(d.mem_kib, max, d.cpu_time_ns, st)
        }
    };
    Ok(reply.into_bytes())
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]
mod tests {
    use super::*;
    use crate::model::power_state::tests::dom;
    use crate::runtime::{DomState, Fixed, HostInfo, Runtime};

    #[test]
    fn reply_format() {
        assert_eq!(
            format_state(0, 0, 0, PowerState::Halted),
            "mem=0 mem_static_max=0 cputime=0 power_state=Halted"
        );
        assert_eq!(
            format_state(512, 1024, 100, PowerState::Running),
            "mem=512 mem_static_max=1024 cputime=100 power_state=Running"
        );
    }

    fn current(rt: Runtime, uri: &str, dest: &str) -> Vec<u8> {
        let run = tempfile::tempdir().unwrap();
        let config = crate::Config {
            xml_path: concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../tests/fixtures/gen10/qubes.xml"
            )
            .into(),
            run_dir: run.path().to_path_buf(),
            libvirt_uri: uri.into(),
            ..crate::Config::default()
        };
        let mut sys = crate::System::with_hypervisor(config, Box::new(Fixed { runtime: rt }));
        sys.call(&crate::wire::RawRequest {
            method: b"admin.vm.CurrentState".to_vec(),
            arg: Vec::new(),
            src: b"dom0".to_vec(),
            target: crate::wire::Target::Name(dest.as_bytes().to_vec()),
            payload: Vec::new(),
        })
    }

    #[test]
    fn current_state_end_to_end() {
        let mut d = dom(DomState::Paused, true);
        d.uuid = "9b810e76-6ec9-4286-a3ca-828dd5f4b3b2".into();
        let rt = Runtime {
            host: HostInfo {
                memory_mib: 3072,
                cpus: 16,
            },
            domains: vec![d],
        };
        let uri = "test+unix:///default?socket=/x";
        assert_eq!(
            current(rt.clone(), uri, "vm0001"),
            b"0\0mem=512 mem_static_max=0 cputime=100 power_state=Paused"
        );
        assert_eq!(
            current(rt.clone(), uri, "vm0002"),
            b"0\0mem=0 mem_static_max=0 cputime=0 power_state=Halted"
        );
        // No dom0 domain in libvirt (a sandbox): the host is dom0; maxmem default 4096 MiB.
        assert_eq!(
            current(rt, uri, "dom0"),
            b"0\0mem=3145728 mem_static_max=4194304 cputime=0 power_state=Running"
        );
    }
}
