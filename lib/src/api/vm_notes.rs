//! admin.vm.notes.* (`core.md` §3.15): `<vm dir>/notes.txt`, not part of qubes.xml.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::error::ApiError;
use crate::model::context::Ctx;
use crate::model::notes_sanitize;
use crate::wire::python::repr as py_repr;

/// Largest accepted note, in bytes.
pub const MAX_NOTES_SIZE: usize = 256_000;

/// The VM directory: `vm-templates/<name>` for TemplateVMs, `appvms/<name>` for the other
/// QubesVM classes; RemoteVM has none (the reference drops the call).
fn vm_dir(ctx: &Ctx<'_>) -> Result<PathBuf, ApiError> {
    let prefix = match ctx.doc().class(ctx.dest) {
        "TemplateVM" => "vm-templates",
        "AppVM" | "StandaloneVM" | "DispVM" => "appvms",
        class => {
            return Err(ApiError::no_reply_in_reference(format!(
                "qube notes are not supported for {class} qubes"
            )))
        }
    };
    Ok(ctx.config.base_dir.join(prefix).join(ctx.dest_name()))
}

/// Python's `str(OSError)`: `[Errno 13] Permission denied: '<path>'`.
fn os_error(e: &io::Error, path: &Path) -> String {
    let Some(code) = e.raw_os_error() else {
        return e.to_string();
    };
    let text = e.to_string();
    let msg = text
        .strip_suffix(&format!(" (os error {code})"))
        .unwrap_or(&text);
    format!("[Errno {code}] {msg}: {}", py_repr(&path.to_string_lossy()))
}

/// `admin.vm.notes.Get`: the file as text (universal newlines); missing file = empty.
pub fn get(ctx: &mut Ctx<'_>) -> Result<Vec<u8>, ApiError> {
    let path = vm_dir(ctx)?.join("notes.txt");
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(read_error(&os_error(&e, &path))),
    };
    let text = notes_sanitize::decode_utf8(&bytes).map_err(|e| read_error(&e))?;
    Ok(universal_newlines(text).into_bytes())
}

fn read_error(e: &str) -> ApiError {
    ApiError::qubes(format!("Failed to read notes file: {e}"))
}

/// Python text-mode reading: `\r\n` and lone `\r` become `\n`.
fn universal_newlines(text: &str) -> String {
    text.replace("\r\n", "\n").replace('\r', "\n")
}

/// `admin.vm.notes.Set`: size check, sanitising, crash-safe write. qubes.xml is not touched.
pub fn set(ctx: &mut Ctx<'_>) -> Result<Vec<u8>, ApiError> {
    let dir = vm_dir(ctx)?;
    if ctx.payload.len() > MAX_NOTES_SIZE {
        return Err(ApiError::protocol(format!(
            "Maximum note size is {MAX_NOTES_SIZE} bytes ({} bytes received)",
            ctx.payload.len()
        )));
    }
    let notes = notes_sanitize::sanitise(&ctx.payload)
        .map_err(|e| ApiError::protocol(format!("Unable to sanitise qube notes: {e}")))?;
    let path = dir.join("notes.txt");
    crate::store::write_file_atomically(&path, notes.as_bytes(), None).map_err(|e| {
        ApiError::qubes(format!(
            "Failed to write notes file: {}",
            os_error(&e, &path)
        ))
    })?;
    Ok(Vec::new())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use std::fs::DirBuilder;
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};

    #[test]
    fn newlines_and_errors() {
        assert_eq!(universal_newlines("a\r\nb\rc\n"), "a\nb\nc\n");
        let e = io::Error::from_raw_os_error(21);
        assert_eq!(
            os_error(&e, Path::new("/x/notes.txt")),
            "[Errno 21] Is a directory: '/x/notes.txt'"
        );
    }

    #[test]
    fn atomic_write_creates_dir_and_replaces() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("appvms/work");
        let path = dir.join("notes.txt");
        crate::store::write_file_atomically(&path, b"one", None).unwrap();
        assert_eq!(
            fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
            0o775 & !umask()
        );
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        crate::store::write_file_atomically(&path, b"two", None).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1);
    }

    fn umask() -> u32 {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("probe");
        DirBuilder::new().mode(0o777).create(&d).unwrap();
        0o777 & !(fs::metadata(&d).unwrap().permissions().mode() & 0o777)
    }
}
