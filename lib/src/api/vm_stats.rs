//! `admin.vm.Stats` (core.md §3.13): after `connection-established`, every `stats_interval`
//! seconds (the global property, read again for each round) one `vm-stats` event per running
//! qube the subscription covers, until the caller goes away. The handler accepts the
//! subscription; [`stream`] is the loop the front end runs with a sampler of the current
//! qubes.xml and live libvirt figures.

use std::collections::HashMap;
use std::io::Write;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use crate::error::ApiError;
use crate::events::follow::{caller_gone, connection_established, hung_up_within};
use crate::events::Event;
use crate::model::context::{Ctx, Stream};
use crate::runtime::DomainRuntime;

pub fn subscribe(ctx: &mut Ctx<'_>) -> Result<Vec<u8>, ApiError> {
    let sub = super::events::subscription(ctx);
    ctx.subscribe(Stream::Stats(sub));
    Ok(Vec::new())
}

/// One round: the interval in force and the live figures of each covered running qube.
pub struct Sample {
    /// `stats_interval`, seconds.
    pub interval: i64,
    pub qubes: Vec<(String, DomainRuntime)>,
}

/// The reference waits `stats_interval` seconds even when it is 0 or negative (a busy loop);
/// we wait at least this long.
const MIN_INTERVAL: Duration = Duration::from_secs(1);

/// The `vm-stats` frame of one qube. No Xen here: no memory overhead, swap or stub-domain
/// figures, so the three assigned/used memory keys equal `memory_kb` and the optional keys are
/// left out (as the reference does when it has no value for them).
pub fn frame(name: &str, d: &DomainRuntime, cpu_usage: u64) -> Vec<u8> {
    let mem = d.mem_kib.to_string();
    let kw = [
        ("memory_kb", mem.clone()),
        ("memory_assigned_total", mem.clone()),
        ("memory_assigned_usable", mem.clone()),
        ("memory_with_swap_used", mem),
        ("cpu_time", (d.cpu_time_ns / 1_000_000).to_string()),
        ("cpu_usage", cpu_usage.to_string()),
        ("online_vcpus", d.vcpus.to_string()),
    ];
    Event::new(
        name,
        "vm-stats",
        kw.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
    )
    .frame()
}

/// CPU usage in whole percent of the qube's vCPUs between two samples.
fn cpu_usage(prev: Option<&(u64, Instant)>, now: (u64, Instant), vcpus: u32) -> u64 {
    let Some(&(cpu0, t0)) = prev else { return 0 };
    let wall = now.1.saturating_duration_since(t0).as_nanos() as f64 * f64::from(vcpus.max(1));
    if wall <= 0.0 {
        return 0;
    }
    let used = now.0.saturating_sub(cpu0) as f64;
    (used * 100.0 / wall) as u64
}

/// Serves the stream on `out` until the caller hangs up. A failed sample (the qube asked for
/// is not running, libvirt is unreachable) ends the stream with its exception frame, as the
/// reference ends it after `connection-established`.
pub fn stream<W: Write + AsFd>(
    out: &mut W,
    mut sample: impl FnMut() -> Result<Sample, ApiError>,
) -> std::io::Result<()> {
    if let Err(e) = out
        .write_all(&connection_established())
        .and_then(|()| out.flush())
    {
        return caller_gone(e);
    }
    let mut prev: HashMap<String, (u64, Instant)> = HashMap::new();
    loop {
        let s = match sample() {
            Ok(s) => s,
            Err(e) => {
                return out
                    .write_all(&crate::wire::frame_exception(&e))
                    .and_then(|()| out.flush())
                    .or_else(caller_gone);
            }
        };
        let now = Instant::now();
        let mut next = HashMap::new();
        for (name, d) in &s.qubes {
            let usage = cpu_usage(prev.get(name), (d.cpu_time_ns, now), d.vcpus);
            if let Err(e) = out.write_all(&frame(name, d, usage)) {
                return caller_gone(e);
            }
            next.insert(name.clone(), (d.cpu_time_ns, now));
        }
        if let Err(e) = out.flush() {
            return caller_gone(e);
        }
        prev = next;
        let secs = u64::try_from(s.interval).unwrap_or(0);
        let until = now + Duration::from_secs(secs).max(MIN_INTERVAL);
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            if hung_up_within(out.as_fd(), left.min(Duration::from_secs(60)))? {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::runtime::DomState;

    #[test]
    fn frame_keys_in_the_reference_order() {
        let d = DomainRuntime {
            name: "work".into(),
            uuid: "u".into(),
            id: 3,
            state: DomState::Running,
            active: true,
            mem_kib: 409600,
            max_mem_kib: 409600,
            vcpus: 2,
            cpu_time_ns: 1_234_567_890,
        };
        assert_eq!(
            frame("work", &d, 7),
            b"1\0work\0vm-stats\0memory_kb\x00409600\0memory_assigned_total\x00409600\0\
memory_assigned_usable\x00409600\0memory_with_swap_used\x00409600\0cpu_time\x001234\0\
cpu_usage\x007\0online_vcpus\x002\0\0"
        );
    }

    #[test]
    fn cpu_usage_is_per_vcpu_percent() {
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_secs(2);
        assert_eq!(cpu_usage(None, (5, t1), 2), 0);
        // 1 s of CPU in 2 s on 2 vCPUs: 25 %.
        assert_eq!(cpu_usage(Some(&(0, t0)), (1_000_000_000, t1), 2), 25);
        assert_eq!(cpu_usage(Some(&(9, t0)), (3, t1), 1), 0);
    }
}
