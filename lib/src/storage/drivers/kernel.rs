//! `linux-kernel`: the read-only kernels directory (`<dir_path>/<version>/{vmlinuz,initramfs,
//! modules.img}`). A qube's `kernel` volume is its current kernel version; nothing is created or
//! removed on disk.

use std::path::{Path, PathBuf};

use crate::storage::{Driver, StorageError, VolumeConfig};

pub struct LinuxKernel {
    dir: PathBuf,
}

impl LinuxKernel {
    pub fn new(dir: PathBuf) -> LinuxKernel {
        LinuxKernel { dir }
    }
}

impl Driver for LinuxKernel {
    /// The kernel version, which the caller knows (the qube's `kernel` property).
    fn vid(&self, _vm: &str, _class: &str, _volume: &str) -> String {
        String::new()
    }
    fn create(&self, _vol: &VolumeConfig) -> Result<(), StorageError> {
        Ok(())
    }
    fn remove(&self, _vol: &VolumeConfig) -> Result<(), StorageError> {
        Ok(())
    }
    /// The kernel must be there (`<dir>/<version>/vmlinuz`); no kernel is fine.
    fn verify(&self, vol: &VolumeConfig) -> Result<(), StorageError> {
        let vmlinuz = self.dir.join(&vol.vid).join("vmlinuz");
        if vol.vid.is_empty() || vmlinuz.exists() {
            return Ok(());
        }
        Err(StorageError::Pool(format!(
            "Missing kernel file: {}",
            crate::wire::python::repr(&vmlinuz.to_string_lossy())
        )))
    }
    fn start(&self, _vol: &VolumeConfig) -> Result<(), StorageError> {
        Ok(())
    }
    fn stop(&self, _vol: &VolumeConfig) -> Result<(), StorageError> {
        Ok(())
    }
    fn size(&self, _vol: &VolumeConfig) -> Result<u64, StorageError> {
        Ok(0)
    }
    fn usage(&self, _vol: &VolumeConfig) -> Result<u64, StorageError> {
        Ok(0)
    }
    /// `<dir_path>/<version>/modules.img`, or empty without a kernel.
    fn path(&self, vol: &VolumeConfig) -> Result<String, StorageError> {
        if vol.vid.is_empty() {
            return Ok(String::new());
        }
        Ok(self
            .dir
            .join(&vol.vid)
            .join("modules.img")
            .to_string_lossy()
            .into_owned())
    }
    fn revisions(&self, _vol: &VolumeConfig) -> Result<Vec<(String, String)>, StorageError> {
        Ok(Vec::new())
    }
    fn is_outdated(&self, _vol: &VolumeConfig) -> bool {
        false
    }
    fn usage_details(&self) -> Vec<(&'static str, u64)> {
        Vec::new()
    }
    /// The subdirectories of the kernels directory, in directory order (as `os.listdir`).
    fn list_volumes(&self) -> Option<Vec<String>> {
        let entries = std::fs::read_dir(&self.dir).ok()?;
        Some(
            entries
                .filter_map(Result::ok)
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect(),
        )
    }
    fn dir_path(&self) -> Option<&Path> {
        Some(&self.dir)
    }
}
