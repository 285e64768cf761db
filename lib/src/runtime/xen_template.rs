//! User overrides of a qube's Xen domain XML, as dom0 administrators write them for the
//! reference: Jinja templates that extend `libvirt/xen.xml` and replace or extend (with
//! `{{ super() }}`) its blocks `basic`, `cpu`, `os`, `features`, `clock`, `on` and `devices`.
//!
//! The first of `libvirt/xen/by-name/<qube>.xml`, `libvirt/xen-user.xml` and
//! `libvirt/xen-dist.xml` found in the template directories (`/etc/qubes/templates`, then
//! `/usr/share/qubes/templates`) is rendered with `vm` (the qube's properties, `features`,
//! `tags`), as the reference selects and renders them. Without one, a Start uses
//! [`XenBlocks::assemble`], and no template engine runs.
//!
//! `libvirt/xen.xml` itself is always ours: each block holds what [`DomainSpec::xen_blocks`]
//! generated, so `super()` gives exactly that. A full copy of the reference's template would
//! need the reference's whole `vm` object (devices, storage, the app), which is not offered.
//!
//! [`DomainSpec::xen_blocks`]: super::domain_xml::DomainSpec::xen_blocks

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use minijinja::value::{Enumerator, Object, Value};
use minijinja::{AutoEscape, Environment, Error, ErrorKind, State, UndefinedBehavior};

use super::domain_xml::XenBlocks;

/// The base template's name, as user templates extend it.
const BASE: &str = "libvirt/xen.xml";

#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("libvirt template {name}: {detail}")]
    Render { name: String, detail: String },
}

/// A property's value as a template sees it (Python's types in the reference).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TplVal {
    None,
    Bool(bool),
    Int(i64),
    Text(String),
    /// A qube, by name: `{{ vm.netvm }}` and `{{ vm.netvm.name }}` both give the name.
    Vm(String),
}

/// What a template gets as `vm`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TemplateVm {
    /// Every property with a value (its own or its default).
    pub properties: Vec<(String, TplVal)>,
    /// The qube's own features (`vm.features.get`, `vm.features[...]`, `in`).
    pub features: BTreeMap<String, String>,
    /// Its features along the template chain (`vm.features.check_with_template`).
    pub features_with_template: BTreeMap<String, String>,
    pub tags: Vec<String>,
}

/// The override the reference would select for qube `name`: its template name and file.
pub fn find_override(dirs: &[PathBuf], name: &str) -> Option<(String, PathBuf)> {
    [
        format!("libvirt/xen/by-name/{name}.xml"),
        "libvirt/xen-user.xml".to_string(),
        "libvirt/xen-dist.xml".to_string(),
    ]
    .into_iter()
    .find_map(|t| lookup(dirs, &t).map(|p| (t, p)))
}

/// The file of template `name` in the first directory that has it. Names that leave the
/// directories (`..`, absolute) have none.
fn lookup(dirs: &[PathBuf], name: &str) -> Option<PathBuf> {
    let rel = Path::new(name);
    if !rel
        .components()
        .all(|c| matches!(c, std::path::Component::Normal(_)))
    {
        return None;
    }
    dirs.iter().map(|d| d.join(rel)).find(|p| p.is_file())
}

/// The domain XML of `blocks` through the user template `selected` (from [`find_override`]),
/// which extends `libvirt/xen.xml`.
pub fn render(
    blocks: &XenBlocks,
    selected: &str,
    dirs: &[PathBuf],
    vm: TemplateVm,
) -> Result<String, TemplateError> {
    let base = blocks.layout(|block, _| {
        format!("{{% block {block} %}}{{{{ blocks.{block} }}}}{{% endblock %}}")
    });
    let err = |e: Error| TemplateError::Render {
        name: selected.to_string(),
        detail: describe(&e),
    };
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_auto_escape_callback(|_| AutoEscape::Custom("xml".into()));
    env.set_formatter(format_value);
    let owned_dirs = dirs.to_vec();
    env.set_loader(move |t| {
        if t == BASE {
            return Ok(Some(base.clone()));
        }
        match lookup(&owned_dirs, t) {
            Some(p) => std::fs::read_to_string(&p).map(Some).map_err(|e| {
                Error::new(
                    ErrorKind::TemplateNotFound,
                    format!("cannot read {}: {e}", p.display()),
                )
            }),
            None => Ok(None),
        }
    });
    let block_values: BTreeMap<String, Value> = blocks
        .named()
        .iter()
        .map(|(k, v)| ((*k).to_string(), Value::from_safe_string((*v).to_string())))
        .collect();
    let tmpl = env.get_template(selected).map_err(err)?;
    let ctx: BTreeMap<String, Value> = [
        ("vm".to_string(), vm_value(vm)),
        ("blocks".to_string(), Value::from_object(block_values)),
    ]
    .into_iter()
    .collect();
    let mut xml = tmpl.render(Value::from_object(ctx)).map_err(err)?;
    // Jinja drops a template's last newline; an override that changes nothing gives the
    // bytes of no override.
    if !xml.ends_with('\n') {
        xml.push('\n');
    }
    Ok(xml)
}

/// An error with its cause chain and the template line, on one line.
fn describe(e: &Error) -> String {
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

/// Prints values as Jinja2 with `autoescape=True` does: booleans and None as Python prints them
/// (`True`, `None`), escaped as MarkupSafe escapes (`&<>"'`), unless safe or escaping is off.
fn format_value(
    out: &mut minijinja::Output,
    state: &mut State,
    value: &Value,
) -> Result<(), Error> {
    use minijinja::value::ValueKind;
    let text = match value.kind() {
        ValueKind::Bool if value.is_true() => "True".to_string(),
        ValueKind::Bool => "False".to_string(),
        ValueKind::None => "None".to_string(),
        ValueKind::Undefined => String::new(),
        _ => value.to_string(),
    };
    let write = |out: &mut minijinja::Output, s: &str| {
        out.write_str(s)
            .map_err(|_| Error::new(ErrorKind::WriteFailure, "formatting failed"))
    };
    if value.is_safe() || matches!(state.auto_escape(), AutoEscape::None) {
        return write(out, &text);
    }
    let mut esc = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => esc.push_str("&amp;"),
            '<' => esc.push_str("&lt;"),
            '>' => esc.push_str("&gt;"),
            '"' => esc.push_str("&#34;"),
            '\'' => esc.push_str("&#39;"),
            c => esc.push(c),
        }
    }
    write(out, &esc)
}

fn vm_value(vm: TemplateVm) -> Value {
    let mut map: BTreeMap<String, Value> = vm
        .properties
        .into_iter()
        .map(|(k, v)| (k, tpl_value(v)))
        .collect();
    map.insert(
        "features".to_string(),
        Value::from_object(Features {
            own: vm.features,
            with_template: vm.features_with_template,
        }),
    );
    map.insert(
        "tags".to_string(),
        vm.tags.into_iter().map(Value::from).collect(),
    );
    Value::from_object(map)
}

fn tpl_value(v: TplVal) -> Value {
    match v {
        TplVal::None => Value::from(()),
        TplVal::Bool(b) => Value::from(b),
        TplVal::Int(i) => Value::from(i),
        TplVal::Text(s) => Value::from(s),
        TplVal::Vm(name) => Value::from_object(VmRef(name)),
    }
}

/// Another qube a property names.
#[derive(Debug)]
struct VmRef(String);

impl Object for VmRef {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        (key.as_str() == Some("name")).then(|| Value::from(self.0.clone()))
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Str(&["name"])
    }

    fn render(self: &Arc<Self>, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result
    where
        Self: Sized + 'static,
    {
        f.write_str(&self.0)
    }
}

/// `vm.features`: a mapping of the qube's own features, with the reference's `get` and
/// `check_with_template`.
#[derive(Debug)]
struct Features {
    own: BTreeMap<String, String>,
    with_template: BTreeMap<String, String>,
}

impl Object for Features {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        key.as_str()
            .and_then(|k| self.own.get(k))
            .map(|v| Value::from(v.clone()))
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Values(self.own.keys().map(|k| Value::from(k.clone())).collect())
    }

    fn call_method(
        self: &Arc<Self>,
        _state: &mut State<'_, '_>,
        method: &str,
        args: &[Value],
    ) -> Result<Value, Error> {
        let map = match method {
            "get" => &self.own,
            "check_with_template" => &self.with_template,
            _ => return Err(Error::from(ErrorKind::UnknownMethod)),
        };
        let (key, default) = match args {
            [k] => (k, Value::from(())),
            [k, d] => (k, d.clone()),
            _ => {
                return Err(Error::new(
                    ErrorKind::InvalidOperation,
                    format!("features.{method} takes a name and an optional default"),
                ))
            }
        };
        Ok(key
            .as_str()
            .and_then(|k| map.get(k))
            .map_or(default, |v| Value::from(v.clone())))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// What a Start does: the blocks assembled, or rendered through the override.
    fn render_xen(
        blocks: &XenBlocks,
        name: &str,
        dirs: &[PathBuf],
        vm: impl FnOnce() -> TemplateVm,
    ) -> Result<String, TemplateError> {
        match find_override(dirs, name) {
            Some((t, _)) => render(blocks, &t, dirs, vm()),
            None => Ok(blocks.assemble()),
        }
    }

    fn blocks() -> XenBlocks {
        XenBlocks {
            basic: "    <name>work</name>\n".into(),
            cpu: String::new(),
            os: "        <type>xenpvh</type>\n".into(),
            features: "        <pae/>\n".into(),
            clock: "    <clock offset=\"utc\"/>\n".into(),
            on: "    <on_crash>destroy</on_crash>\n".into(),
            devices: "        <console type=\"pty\"/>\n".into(),
        }
    }

    fn vm() -> TemplateVm {
        TemplateVm {
            properties: vec![
                ("name".into(), TplVal::Text("work".into())),
                ("memory".into(), TplVal::Int(400)),
                ("debug".into(), TplVal::Bool(false)),
                ("netvm".into(), TplVal::Vm("sys-firewall".into())),
                ("default_user".into(), TplVal::Text("a'b<c>&\"".into())),
                ("guivm".into(), TplVal::None),
            ],
            features: [("own".to_string(), "1".to_string())].into(),
            features_with_template: [
                ("own".to_string(), "1".to_string()),
                ("inherited".to_string(), "yes".to_string()),
            ]
            .into(),
            tags: vec!["audio".into()],
        }
    }

    fn dirs_with(files: &[(&str, &str)]) -> (tempfile::TempDir, Vec<PathBuf>) {
        let d = tempfile::tempdir().unwrap();
        let etc = d.path().join("etc");
        let share = d.path().join("share");
        for (name, text) in files {
            let p = d.path().join(name);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
        (d, vec![etc, share])
    }

    #[test]
    fn without_an_override_the_blocks_are_assembled() {
        let (_d, dirs) = dirs_with(&[]);
        let got = render_xen(&blocks(), "work", &dirs, || unreachable!()).unwrap();
        assert_eq!(got, blocks().assemble());
        assert!(got.starts_with("<domain type=\"xen\">\n    <name>work</name>\n    <os>\n"));
        assert!(got.ends_with(
            "    <devices>\n        <console type=\"pty\"/>\n    </devices>\n</domain>\n"
        ));
    }

    #[test]
    fn an_override_that_changes_nothing_gives_the_same_bytes() {
        let (_d, dirs) = dirs_with(&[(
            "etc/libvirt/xen-user.xml",
            "{% extends 'libvirt/xen.xml' %}",
        )]);
        let got = render_xen(&blocks(), "work", &dirs, vm).unwrap();
        assert_eq!(got, blocks().assemble());
    }

    #[test]
    fn blocks_replaced_and_extended_with_vm_values() {
        let (_d, dirs) = dirs_with(&[(
            "etc/libvirt/xen-user.xml",
            "{% extends 'libvirt/xen.xml' %}\
             {% block on %}    <on_crash>{{ vm.name }}-{{ vm.memory + 1 }}-{{ vm.debug }}</on_crash>\n{% endblock %}\
             {% block devices %}{{ super() }}        <!-- {{ vm.netvm }} {{ vm.netvm.name }} {{ vm.guivm }} \
             {{ vm.features.get('own') }} {{ vm.features.get('x', 'dflt') }} \
             {{ vm.features.check_with_template('inherited') }} {{ 'own' in vm.features }} \
             {{ 'audio' in vm.tags }} {{ vm.default_user }} -->\n{% endblock %}",
        )]);
        let got = render_xen(&blocks(), "work", &dirs, vm).unwrap();
        let want = blocks()
            .assemble()
            .replace(
                "    <on_crash>destroy</on_crash>\n",
                "    <on_crash>work-401-False</on_crash>\n",
            )
            .replace(
                "        <console type=\"pty\"/>\n",
                "        <console type=\"pty\"/>\n        <!-- sys-firewall sys-firewall None 1 dflt \
                 yes True True a&#39;b&lt;c&gt;&amp;&#34; -->\n",
            );
        assert_eq!(got, want);
    }

    #[test]
    fn by_name_wins_over_user_wins_over_dist_and_etc_over_share() {
        let base = "{% extends 'libvirt/xen.xml' %}{% block basic %}";
        let (_d, dirs) = dirs_with(&[
            (
                "share/libvirt/xen-dist.xml",
                &format!("{base}dist\n{{% endblock %}}"),
            ),
            (
                "share/libvirt/xen-user.xml",
                &format!("{base}share\n{{% endblock %}}"),
            ),
            (
                "etc/libvirt/xen-user.xml",
                &format!("{base}user\n{{% endblock %}}"),
            ),
            (
                "share/libvirt/xen/by-name/work.xml",
                &format!("{base}by-name\n{{% endblock %}}"),
            ),
        ]);
        let basic = |name: &str| {
            let x = render_xen(&blocks(), name, &dirs, vm).unwrap();
            x.lines().nth(1).unwrap().to_string()
        };
        assert_eq!(basic("work"), "by-name");
        assert_eq!(basic("other"), "user");
        std::fs::remove_file(dirs[0].join("libvirt/xen-user.xml")).unwrap();
        assert_eq!(basic("other"), "share");
        std::fs::remove_file(dirs[1].join("libvirt/xen-user.xml")).unwrap();
        assert_eq!(basic("other"), "dist");
    }

    #[test]
    fn errors_name_the_template() {
        let (_d, dirs) = dirs_with(&[(
            "etc/libvirt/xen-user.xml",
            "{% extends 'libvirt/xen.xml' %}{% block on %}{{ vm.no_such_property }}{% endblock %}",
        )]);
        let e = render_xen(&blocks(), "work", &dirs, vm).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("libvirt template libvirt/xen-user.xml: "),
            "{e}"
        );
        let (_d, dirs) = dirs_with(&[("etc/libvirt/xen-user.xml", "{% extends 'libvirt/x")]);
        assert!(render_xen(&blocks(), "work", &dirs, vm).is_err());
        // Names that leave the template directories are not loaded.
        let (_d, dirs) = dirs_with(&[
            ("secret.xml", "secret"),
            (
                "etc/libvirt/xen-user.xml",
                "{% include '../../secret.xml' %}",
            ),
        ]);
        let e = render_xen(&blocks(), "work", &dirs, vm).unwrap_err();
        assert!(e.to_string().contains("not found"), "{e}");
    }
}
