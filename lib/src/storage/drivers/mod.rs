//! The storage drivers, one module each.

pub mod kernel;
pub mod lvm;
pub mod reflink;

use std::path::{Path, PathBuf};

use super::{statvfs_usage, Driver, StorageError, VolumeConfig};

/// A pool whose driver this build does not implement yet (`file`, `callback`, `zfs`): its configuration is listed and its filesystem usage reported; every volume
/// operation is refused with a clear error rather than answered with guessed values.
pub struct Unsupported {
    driver: String,
    dir: Option<PathBuf>,
}

impl Unsupported {
    pub fn new(driver: &str, dir: Option<&str>) -> Unsupported {
        Unsupported {
            driver: driver.to_string(),
            dir: dir.map(PathBuf::from),
        }
    }

    fn refuse(&self, what: &'static str) -> StorageError {
        StorageError::Unsupported {
            driver: self.driver.clone(),
            what,
        }
    }
}

impl Driver for Unsupported {
    fn vid(&self, vm: &str, class: &str, volume: &str) -> String {
        reflink::vid(vm, class, volume)
    }
    fn create(&self, _vol: &VolumeConfig) -> Result<(), StorageError> {
        Err(self.refuse("create volumes yet"))
    }
    fn remove(&self, _vol: &VolumeConfig) -> Result<(), StorageError> {
        Err(self.refuse("remove volumes yet"))
    }
    fn verify(&self, _vol: &VolumeConfig) -> Result<(), StorageError> {
        Err(self.refuse("start volumes yet"))
    }
    fn start(&self, _vol: &VolumeConfig) -> Result<(), StorageError> {
        Err(self.refuse("start volumes yet"))
    }
    fn stop(&self, _vol: &VolumeConfig) -> Result<(), StorageError> {
        Err(self.refuse("stop volumes yet"))
    }
    fn size(&self, _vol: &VolumeConfig) -> Result<u64, StorageError> {
        Err(self.refuse("report volume sizes yet"))
    }
    fn usage(&self, _vol: &VolumeConfig) -> Result<u64, StorageError> {
        Err(self.refuse("report volume usage yet"))
    }
    fn path(&self, _vol: &VolumeConfig) -> Result<String, StorageError> {
        Err(self.refuse("report volume paths yet"))
    }
    fn revisions(&self, _vol: &VolumeConfig) -> Result<Vec<(String, String)>, StorageError> {
        Err(self.refuse("list revisions yet"))
    }
    fn is_outdated(&self, _vol: &VolumeConfig) -> bool {
        false
    }
    fn usage_details(&self) -> Vec<(&'static str, u64)> {
        match (&self.dir, self.driver.as_str()) {
            (Some(d), "file") => statvfs_usage(d),
            _ => Vec::new(),
        }
    }
    fn list_volumes(&self) -> Option<Vec<String>> {
        None
    }
    fn dir_path(&self) -> Option<&Path> {
        self.dir.as_deref()
    }
}
