//! admin.vmclass.List

use crate::error::ApiError;
use crate::model::context::Ctx;

/// The `qubes.vm` entry points, in the order the reference lists them (alphabetical).
pub const VM_CLASSES: &[&str] = &[
    "AdminVM",
    "AppVM",
    "DispVM",
    "RemoteVM",
    "StandaloneVM",
    "TemplateVM",
];

/// One class per line; with an argument, just that class (or `QubesException
/// "no such VM class: '<x>'"`, the reference's message for an unknown class).
pub fn list(ctx: &mut Ctx<'_>) -> Result<Vec<u8>, ApiError> {
    list_reply(&ctx.arg)
}

fn list_reply(arg: &str) -> Result<Vec<u8>, ApiError> {
    if arg.is_empty() {
        return Ok(VM_CLASSES
            .iter()
            .flat_map(|c| [c.as_bytes(), b"\n"].concat())
            .collect());
    }
    if VM_CLASSES.contains(&arg) {
        Ok(format!("{arg}\n").into_bytes())
    } else {
        Err(ApiError::qubes(format!("no such VM class: '{arg}'")))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn replies() {
        assert_eq!(
            list_reply("").unwrap(),
            b"AdminVM\nAppVM\nDispVM\nRemoteVM\nStandaloneVM\nTemplateVM\n"
        );
        assert_eq!(list_reply("DispVM").unwrap(), b"DispVM\n");
        let e = list_reply("Foo").unwrap_err();
        assert_eq!(e.msg, "no such VM class: 'Foo'");
    }
}
