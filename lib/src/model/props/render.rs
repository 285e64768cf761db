//! Reply formats of the property calls (§3.8, gotcha 3).

use super::defaults::{default_of, get, is_default};
use super::defs::PropDef;
use super::{table_of, Holder, ReadErr};
use crate::error::ApiError;
use crate::model::context::Ctx;

/// Get: `default=<True|False> type=<T> <value>`; unreadable → `default=True type=<T> `.
pub fn get_line(ctx: &Ctx<'_>, h: Holder, def: &PropDef) -> Result<String, ApiError> {
    let ty = def.ty.wire_name();
    match get(ctx, h, def) {
        Ok(v) => {
            let dflt = if is_default(ctx, h, def)? {
                "True"
            } else {
                "False"
            };
            Ok(format!("default={dflt} type={ty} {}", v.reply_str()))
        }
        Err(ReadErr::Unset) => Ok(format!("default=True type={ty} ")),
        Err(ReadErr::Api(e)) => Err(e),
    }
}

/// GetAll: one `<name> <Get-format>\n` per property in property order, with only `\` and LF
/// escaped.
pub fn get_all(ctx: &Ctx<'_>, h: Holder) -> Result<String, ApiError> {
    let mut out = String::new();
    for def in table_of(ctx, h)? {
        let line = get_line(ctx, h, def)?
            .replace('\\', "\\\\")
            .replace('\n', "\\n");
        out.push_str(def.name);
        out.push(' ');
        out.push_str(&line);
        out.push('\n');
    }
    Ok(out)
}

/// GetDefault: `type=<T> <value>`, or an empty body when there is no default.
pub fn get_default(ctx: &Ctx<'_>, h: Holder, def: &PropDef) -> Result<String, ApiError> {
    match default_of(ctx, h, def) {
        Ok(v) => Ok(format!("type={} {}", def.ty.wire_name(), v.reply_str())),
        Err(ReadErr::Unset) => Ok(String::new()),
        Err(ReadErr::Api(e)) => Err(e),
    }
}

/// List: names in property order; with an argument only that one (the Admin API document's
/// rule), after the existence check.
pub fn list(ctx: &Ctx<'_>, h: Holder, only: Option<&str>) -> Result<String, ApiError> {
    if let Some(name) = only {
        let def = super::lookup(ctx, h, name)?;
        return Ok(format!("{}\n", def.name));
    }
    Ok(table_of(ctx, h)?
        .iter()
        .map(|d| format!("{}\n", d.name))
        .collect())
}
