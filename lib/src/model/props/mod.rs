//! Property definitions and semantics shared by admin.property.* and admin.vm.property.*.
//!
//! * [`defs`]: the static per-class tables (order, type, kind, help texts).
//! * [`value`]: typed values, Set payload sanitizing (§4.2) and stored-text parsing.
//! * [`defaults`]: reading a property: stored value, else its default rule.
//! * [`setters`]: assignment and reset: validation, storage, side effects and events.
//! * [`render`]: the reply formats.

pub mod defaults;
pub mod defs;
pub mod render;
pub mod setters;
pub mod value;

use crate::error::{ApiError, ExcType};
use crate::model::context::Ctx;
use crate::store::DomId;

/// The object whose properties a call addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holder {
    /// The global `Qubes` object.
    Global,
    Vm(DomId),
}

/// Why a property could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadErr {
    /// No stored value and no (working) default: the reference's AttributeError, rendered as an
    /// empty value with `default=True`.
    Unset,
    /// A real failure (store, hypervisor).
    Api(ApiError),
}

impl From<ApiError> for ReadErr {
    fn from(e: ApiError) -> Self {
        ReadErr::Api(e)
    }
}

impl From<crate::store::StoreError> for ReadErr {
    fn from(e: crate::store::StoreError) -> Self {
        ReadErr::Api(e.into())
    }
}

/// Class name of a holder (`Qubes` for the global object).
pub fn class_of<'c>(ctx: &'c Ctx<'_>, h: Holder) -> &'c str {
    match h {
        Holder::Global => "Qubes",
        Holder::Vm(id) => ctx.doc().class(id),
    }
}

/// Name used in messages: the VM name, or `Qubes`.
pub fn holder_name<'c>(ctx: &'c Ctx<'_>, h: Holder) -> &'c str {
    match h {
        Holder::Global => "Qubes",
        Holder::Vm(id) => ctx.doc().name(id),
    }
}

/// The property table of a holder.
pub fn table_of(ctx: &Ctx<'_>, h: Holder) -> Result<&'static [defs::PropDef], ApiError> {
    let class = class_of(ctx, h);
    defs::table(class).ok_or_else(|| ApiError::qubes(format!("unknown qube class '{class}'")))
}

/// Existence check every property call starts with:
/// `QubesNoSuchPropertyError "Invalid property '<p>' of <holder>"`.
pub fn lookup(ctx: &Ctx<'_>, h: Holder, name: &str) -> Result<&'static defs::PropDef, ApiError> {
    let table = table_of(ctx, h)?;
    defs::find(table, name).map(|(_, d)| d).ok_or_else(|| {
        ApiError::new(
            ExcType::QubesNoSuchPropertyError,
            format!(
                "Invalid property {} of {}",
                value::py_repr(name),
                holder_name(ctx, h)
            ),
        )
    })
}

/// A property's value as `Get` reports it, typed, for in-process users of the library.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PropertyValue {
    /// Wire type name: `vm`, `int`, `bool`, `label` or `str`.
    pub wire_type: &'static str,
    /// True when no value is stored (the value comes from the default rule).
    pub is_default: bool,
    /// The value as the reference renders it (`None` when it has neither value nor default).
    pub value: Option<String>,
}

/// Reads one property of `h` (existence check included).
pub fn read(ctx: &Ctx<'_>, h: Holder, name: &str) -> Result<PropertyValue, ApiError> {
    let def = lookup(ctx, h, name)?;
    let wire_type = def.ty.wire_name();
    match defaults::get(ctx, h, def) {
        Ok(v) => Ok(PropertyValue {
            wire_type,
            is_default: defaults::is_default(ctx, h, def)?,
            value: Some(v.reply_str()),
        }),
        Err(ReadErr::Unset) => Ok(PropertyValue {
            wire_type,
            is_default: true,
            value: None,
        }),
        Err(ReadErr::Api(e)) => Err(e),
    }
}

#[cfg(test)]
mod api_tests {
    use crate::runtime::{HostInfo, Offline};
    use crate::{Config, System};

    /// The typed in-process API agrees with the wire replies.
    #[test]
    fn typed_property_reads() {
        let dir = tempfile::tempdir().unwrap();
        let xml = dir.path().join("qubes.xml");
        std::fs::copy(
            concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../tests/fixtures/gen10/qubes.xml"
            ),
            &xml,
        )
        .unwrap();
        let config = Config {
            xml_path: xml,
            run_dir: dir.path().join("run"),
            ..Config::default()
        };
        let mut sys = System::with_hypervisor(
            config,
            Box::new(Offline {
                host: HostInfo {
                    memory_mib: 3072,
                    cpus: 16,
                },
            }),
        );
        let label = sys.property(Some("vm0001"), "label").unwrap();
        assert_eq!(
            (label.wire_type, label.is_default, label.value.as_deref()),
            ("label", false, Some("orange"))
        );
        let netvm = sys.property(Some("vm0001"), "netvm").unwrap();
        assert_eq!(
            (netvm.wire_type, netvm.is_default, netvm.value.as_deref()),
            ("vm", true, Some("sys-firewall"))
        );
        let tpl = sys.property(None, "default_template").unwrap();
        assert_eq!(tpl.value.as_deref(), Some("fedora-41"));
        assert_eq!(
            sys.property(Some("vm0001"), "nosuch").unwrap_err().msg,
            "Invalid property 'nosuch' of vm0001"
        );
        let doc = sys.document().unwrap();
        assert_eq!(doc.domains().len(), 15);
    }

    /// A label stored by index (`3`, `label-0_3`) reads by name, as the reference's
    /// `_setter_label` loads it (regression: it used to read back as the raw text).
    #[test]
    fn label_stored_by_index_reads_by_name() {
        let fixture = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/fixtures/gen10/qubes.xml"
        ))
        .unwrap();
        for stored in ["3", "label-0_3", "label-3", "yellow"] {
            let dir = tempfile::tempdir().unwrap();
            let xml = dir.path().join("qubes.xml");
            let text = fixture.replacen(
                "<property name=\"label\">red</property>\n        <property name=\"name\">default-dvm</property>",
                &format!("<property name=\"label\">{stored}</property>\n        <property name=\"name\">default-dvm</property>"),
                1,
            );
            assert_ne!(text, fixture);
            std::fs::write(&xml, text).unwrap();
            let config = Config {
                xml_path: xml,
                run_dir: dir.path().join("run"),
                ..Config::default()
            };
            let mut sys = System::with_hypervisor(
                config,
                Box::new(Offline {
                    host: HostInfo {
                        memory_mib: 3072,
                        cpus: 16,
                    },
                }),
            );
            let label = sys.property(Some("default-dvm"), "label").unwrap();
            assert_eq!(label.value.as_deref(), Some("yellow"), "stored {stored:?}");
        }
    }
}
