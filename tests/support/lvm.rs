//! The LVM stand-in set-up shared by the lvm_thin tests: a sandbox with an `lvm` pool and the
//! stand-in tools (`fake-lvm.py`) under the tools' names.

use std::path::PathBuf;
use std::process::Command;

use super::{frame_request, run, Sandbox};

pub const CAPTURE_BASE: &str = "/work/oracle-run/golden-ref/varlib";
pub const GIB: u64 = 1 << 30;

pub struct Lvm {
    pub sb: Sandbox,
    pub bin: PathBuf,
}

fn lv(name: &str, pool: &str, size: u64, data: &str, attr: &str, origin: &str) -> String {
    format!(
        r#"{{"vg": "qubes_dom0", "pool": "{pool}", "name": "{name}", "size": {size}, "data": "{data}", "attr": "{attr}", "origin": "{origin}", "meta_size": 0, "meta_pct": ""}}"#
    )
}

impl Lvm {
    /// The golden fixture plus an `lvm` pool (`qubes_dom0/vm-pool`) and stand-in tools; `None`
    /// (with the reason printed) where they cannot run.
    pub fn new() -> Option<Lvm> {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIP: the driver runs the LVM tools through sudo when not root");
            return None;
        }
        if Command::new("python3").arg("-V").output().is_err() {
            eprintln!("SKIP: python3 (the stand-in LVM tools) is missing");
            return None;
        }
        let sb = Sandbox::new_rebased("golden-10", CAPTURE_BASE);
        let bin = sb.dir.path().join("lvm-bin");
        std::fs::create_dir(&bin).unwrap();
        let tool = super::tests_dir("support/fake-lvm.py");
        for name in [
            "lvs", "lvcreate", "lvremove", "lvrename", "lvchange", "lvextend",
        ] {
            std::os::unix::fs::symlink(&tool, bin.join(name)).unwrap();
        }
        let state = [
            lv("root", "", 20 * GIB, "", "-wi-ao----", ""),
            format!(
                r#"{{"vg": "qubes_dom0", "pool": "", "name": "vm-pool", "size": {}, "data": "12.50", "attr": "twi-aotz--", "origin": "", "meta_size": 109051904, "meta_pct": "5.00"}}"#,
                100 * GIB
            ),
            lv("unmanaged", "vm-pool", GIB, "1.00", "Vwi-a-tz--", ""),
            lv(
                "vm-old-private",
                "vm-pool",
                2 * GIB,
                "50.00",
                "Vwi-a-tz--",
                "",
            ),
            lv(
                "vm-old-private-1700000000-back",
                "vm-pool",
                2 * GIB,
                "40.00",
                "Vwi---tz--",
                "",
            ),
            lv(
                "vm-old-private-1600000000-back",
                "vm-pool",
                2 * GIB,
                "30.00",
                "Vwi---tz--",
                "",
            ),
            lv(
                "vm-old-private-snap",
                "vm-pool",
                2 * GIB,
                "51.00",
                "Vwi-aotz--",
                "vm-old-private",
            ),
        ];
        std::fs::write(
            sb.dir.path().join("lvm.json"),
            format!("[{}]", state.join(",")),
        )
        .unwrap();
        let xml = std::fs::read_to_string(sb.xml()).unwrap().replacen(
            "  </pools>",
            "    <pool name=\"lvm\" volume_group=\"qubes_dom0\" thin_pool=\"vm-pool\" driver=\"lvm_thin\" revisions_to_keep=\"2\" ephemeral_volatile=\"False\"/>\n  </pools>",
            1,
        );
        std::fs::write(sb.xml(), xml).unwrap();
        Some(Lvm { sb, bin })
    }

    pub fn call(
        &self,
        method_arg: &str,
        dest: &str,
        payload: &[u8],
        env: &[(&str, &str)],
    ) -> String {
        let mut c = self.sb.command();
        let path = format!(
            "{}:{}",
            self.bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        c.arg("--socket-request")
            .env("PATH", path)
            .env("FAKE_LVM_STATE", self.sb.dir.path().join("lvm.json"))
            .env("FAKE_LVM_LOG", self.log_path());
        for (k, v) in env {
            c.env(k, v);
        }
        let out = run(c, &frame_request(method_arg, "dom0", dest, payload));
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn log_path(&self) -> PathBuf {
        self.sb.dir.path().join("lvm.log")
    }

    /// The command lines run since the last look (tool name first, space-joined).
    pub fn commands(&self) -> Vec<String> {
        let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let _ = std::fs::remove_file(self.log_path());
        text.lines()
            .map(|l| {
                let v: Vec<String> = serde_like_parse(l);
                v.join(" ")
            })
            .collect()
    }

    pub fn lv_names(&self) -> Vec<String> {
        let text = std::fs::read_to_string(self.sb.dir.path().join("lvm.json")).unwrap();
        text.split("\"name\": \"")
            .skip(1)
            .map(|s| s.split('"').next().unwrap().to_string())
            .collect()
    }
}

/// A JSON array of plain strings (what the stand-in logs) without a JSON library.
fn serde_like_parse(line: &str) -> Vec<String> {
    let inner = line.trim().trim_start_matches('[').trim_end_matches(']');
    inner
        .split("\", \"")
        .map(|s| s.trim_matches('"').replace("\\\"", "\""))
        .collect()
}

pub const LVS: &str = "lvs --noheadings -o vg_name,pool_lv,name,lv_size,data_percent,lv_attr,origin,lv_metadata_size,metadata_percent --units b --separator ;";
