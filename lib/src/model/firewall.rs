//! A qube's firewall (`storage-devices-backup.md` §C): an ordered rule list kept in
//! `<qube dir>/firewall.xml` (not in qubes.xml), its three text forms (the API's, the QubesDB's,
//! the file's) and what the netvm's QubesDB gets for it (§C.6).

use std::path::Path;

use crate::error::ApiError;
use crate::model::qubesdb::QdbOp;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Accept,
    Drop,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    Tcp,
    Udp,
    Icmp,
}

/// A destination: an address or network as given (prefix added when absent), or a host name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dst {
    V4(String),
    V6(String),
    Name(String),
}

/// One rule. Options are kept in the reference's property order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub action: Action,
    pub comment: Option<String>,
    /// UNIX time after which the rule no longer applies.
    pub expire: Option<i64>,
    pub dsthost: Option<Dst>,
    pub proto: Option<Proto>,
    /// `specialtarget=dns` (the only special target).
    pub dns: bool,
    pub dstports: Option<(u32, u32)>,
    pub icmptype: Option<u32>,
}

impl Rule {
    fn accept_all() -> Rule {
        Rule {
            action: Action::Accept,
            comment: None,
            expire: None,
            dsthost: None,
            proto: None,
            dns: false,
            dstports: None,
            icmptype: None,
        }
    }

    pub fn expired(&self, now: i64) -> bool {
        self.expire.is_some_and(|t| t < now)
    }

    /// The options before the comment, `key=value` in property order (`expire` optional).
    fn options(&self, with_expire: bool) -> Vec<String> {
        let mut out = vec![format!(
            "action={}",
            match self.action {
                Action::Accept => "accept",
                Action::Drop => "drop",
            }
        )];
        if let Some(t) = self.expire.filter(|_| with_expire) {
            out.push(format!("expire={t}"));
        }
        match &self.dsthost {
            Some(Dst::V4(a)) => out.push(format!("dst4={a}")),
            Some(Dst::V6(a)) => out.push(format!("dst6={a}")),
            Some(Dst::Name(n)) => out.push(format!("dsthost={n}")),
            None => {}
        }
        if let Some(p) = self.proto {
            out.push(format!("proto={}", proto_name(p)));
        }
        if self.dns {
            out.push("specialtarget=dns".to_string());
        }
        if let Some((lo, hi)) = self.dstports {
            out.push(format!("dstports={lo}-{hi}"));
        }
        if let Some(t) = self.icmptype {
            out.push(format!("icmptype={t}"));
        }
        out
    }

    /// The API form (`admin.vm.firewall.Get`): options in property order, the comment last.
    pub fn api_form(&self) -> String {
        let mut opts = self.options(true);
        if let Some(c) = &self.comment {
            opts.push(format!("comment={c}"));
        }
        opts.join(" ")
    }

    /// The QubesDB form: no `expire`, no comment.
    pub fn qdb_form(&self) -> String {
        self.options(false).join(" ")
    }
}

fn proto_name(p: Proto) -> &'static str {
    match p {
        Proto::Tcp => "tcp",
        Proto::Udp => "udp",
        Proto::Icmp => "icmp",
    }
}

/// A rule that the reference rejects with a `ValueError` (it then drops the connection; we
/// answer with this message).
fn invalid(msg: impl Into<String>) -> ApiError {
    ApiError::no_reply_in_reference(msg)
}

/// The character check every option value but `comment` passes (on its normalised form).
fn check_chars(value: &str) -> Result<(), ApiError> {
    let ok = value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b":;,./_[]-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(invalid("Invalid chars in value"))
    }
}

/// Python's `int()` of a decimal text: surrounding whitespace, a sign, `_` between digits.
fn py_int(s: &str) -> Option<i64> {
    let s = s.trim_ascii();
    let (neg, digits) = match s.as_bytes().first() {
        Some(b'-') => (true, s.get(1..)?),
        Some(b'+') => (false, s.get(1..)?),
        _ => (false, s),
    };
    if digits.is_empty()
        || digits.starts_with('_')
        || digits.ends_with('_')
        || digits.contains("__")
        || !digits.bytes().all(|b| b.is_ascii_digit() || b == b'_')
    {
        return None;
    }
    let n: i64 = digits.replace('_', "").parse().ok()?;
    Some(if neg { -n } else { n })
}

fn parse_dst(value: &str) -> Result<Dst, ApiError> {
    if value.matches('/').count() > 1 {
        return Err(invalid(format!("Too many /: {value}")));
    }
    let dst = match value.split_once('/') {
        None => {
            if value.parse::<std::net::Ipv6Addr>().is_ok() {
                Dst::V6(format!("{value}/128"))
            } else if value.parse::<std::net::Ipv4Addr>().is_ok() && value.matches('.').count() == 3
            {
                Dst::V4(format!("{value}/32"))
            } else if !value.is_empty()
                && value
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
            {
                Dst::Name(value.to_string())
            } else {
                return Err(invalid("Invalid hostname"));
            }
        }
        Some((host, prefix)) => {
            let bad = || invalid(format!("Invalid IP address: {value}"));
            if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            let len: u32 = prefix.parse().map_err(|_| bad())?;
            if host.parse::<std::net::Ipv6Addr>().is_ok() && len <= 128 {
                Dst::V6(value.to_string())
            } else if host.parse::<std::net::Ipv4Addr>().is_ok()
                && host.matches('.').count() == 3
                && len <= 32
            {
                Dst::V4(value.to_string())
            } else {
                return Err(bad());
            }
        }
    };
    let (Dst::V4(t) | Dst::V6(t) | Dst::Name(t)) = &dst;
    check_chars(t)?;
    Ok(dst)
}

fn parse_ports(value: &str) -> Result<(u32, u32), ApiError> {
    let bad = || invalid(format!("Invalid port range: {value}"));
    let parts: Vec<&str> = value.split('-').collect();
    let (lo, hi) = match parts.as_slice() {
        [one] => (py_int(one).ok_or_else(bad)?, py_int(one).ok_or_else(bad)?),
        [lo, hi] => (py_int(lo).ok_or_else(bad)?, py_int(hi).ok_or_else(bad)?),
        _ => return Err(bad()),
    };
    if lo < 0 || lo > hi || hi > 65535 {
        return Err(bad());
    }
    Ok((
        u32::try_from(lo).map_err(|_| bad())?,
        u32::try_from(hi).map_err(|_| bad())?,
    ))
}

/// Builds a rule from `(option, value)` pairs (option names as in the file: `dsthost` for
/// every destination), then checks the cross-field rules.
fn build(opts: &[(&str, &str)]) -> Result<Rule, ApiError> {
    let mut action = None;
    let mut r = Rule::accept_all();
    for (key, value) in opts {
        let value = *value;
        match *key {
            "action" => {
                check_chars(value)?;
                action = Some(match value {
                    "accept" => Action::Accept,
                    "drop" => Action::Drop,
                    _ => return Err(invalid(format!("Invalid action: {value}"))),
                })
            }
            "proto" => {
                check_chars(value)?;
                r.proto = Some(match value {
                    "tcp" => Proto::Tcp,
                    "udp" => Proto::Udp,
                    "icmp" => Proto::Icmp,
                    _ => return Err(invalid(format!("Invalid protocol: {value}"))),
                })
            }
            "dsthost" => r.dsthost = Some(parse_dst(value)?),
            "dstports" => {
                let ports = parse_ports(value)?;
                check_chars(&format!("{}-{}", ports.0, ports.1))?;
                r.dstports = Some(ports);
            }
            "icmptype" => {
                if value.len() > 3 || value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit())
                {
                    return Err(invalid(format!("Invalid ICMP type: {value}")));
                }
                let t: u32 = value.parse().map_err(|_| invalid("Invalid ICMP type"))?;
                if t > 255 {
                    return Err(invalid(format!("ICMP type out of range: {value}")));
                }
                r.icmptype = Some(t);
            }
            "specialtarget" => {
                check_chars(value)?;
                if value != "dns" {
                    return Err(invalid(format!("Invalid special target: {value}")));
                }
                r.dns = true;
            }
            "expire" => {
                if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(invalid(format!("Invalid expire: {value}")));
                }
                r.expire = Some(value.parse().map_err(|_| invalid("Invalid expire"))?);
            }
            "comment" => {
                let ok = value
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b":;,./_[] -".contains(&b));
                if !ok {
                    return Err(invalid("Invalid chars in comment"));
                }
                r.comment = Some(value.to_string());
            }
            _ => return Err(invalid("Unknown firewall option")),
        }
    }
    r.action = action.ok_or_else(|| invalid("Property 'action' cannot be None"))?;
    if r.dstports.is_some() && !matches!(r.proto, Some(Proto::Tcp | Proto::Udp)) {
        return Err(invalid("dstports valid only for 'tcp' and 'udp' protocols"));
    }
    if r.icmptype.is_some() && r.proto != Some(Proto::Icmp) {
        return Err(invalid("icmptype valid only for 'icmp' protocol"));
    }
    Ok(r)
}

/// One line of `admin.vm.firewall.Set` (§C.2).
pub fn parse_api_line(line: &str) -> Result<Rule, ApiError> {
    let (head, comment) = match line.split_once("comment=") {
        Some((h, c)) => (h, Some(c).filter(|c| !c.is_empty())),
        None => (line, None),
    };
    let mut opts: Vec<(&str, &str)> = Vec::new();
    for piece in head.trim_ascii().split(' ') {
        let Some((key, value)) = piece.split_once('=') else {
            return Err(invalid("not enough values to unpack (expected 2, got 1)"));
        };
        let key = match key {
            "dst4" | "dst6" | "dstname" | "dsthost" => "dsthost",
            "action" | "proto" | "dstports" | "icmptype" | "specialtarget" | "expire" => key,
            _ => return Err(invalid("Unknown firewall option")),
        };
        if opts.iter().any(|(k, _)| *k == key) {
            return Err(invalid(format!("Option '{key}' already set")));
        }
        opts.push((key, value));
    }
    if let Some(c) = comment {
        opts.push(("comment", c));
    }
    build(&opts)
}

/// Python's `str.splitlines` for ASCII text.
pub fn splitlines(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let Some(i) = rest.find(['\n', '\r', '\x0b', '\x0c', '\x1c', '\x1d', '\x1e']) else {
            out.push(rest);
            break;
        };
        out.push(rest.get(..i).unwrap_or_default());
        let skip = if rest.get(i..i + 2) == Some("\r\n") {
            2
        } else {
            1
        };
        rest = rest.get(i + skip..).unwrap_or_default();
    }
    out
}

/// The rule list of a qube whose directory is `dir`: `firewall.xml` (version 2, or the legacy
/// version 1), or the default `[action=accept]` when there is none.
pub fn load(dir: &Path) -> Result<Vec<Rule>, ApiError> {
    let path = dir.join("firewall.xml");
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![Rule::accept_all()]),
        Err(e) => {
            return Err(ApiError::qubes(format!(
                "firewall load error: {}: {e}",
                path.display()
            )))
        }
    };
    parse_file(&text).map_err(|e| match e.ty {
        crate::error::ExcType::QubesVMError => e,
        _ => ApiError::qubes(format!(
            "firewall load error: {}: {}",
            path.display(),
            e.msg
        )),
    })
}

/// An element with its attributes and text, as much of the file's tree as the formats need.
#[derive(Debug, Default)]
struct Node {
    name: String,
    attrs: Vec<(String, String)>,
    text: String,
    children: Vec<Node>,
}

impl Node {
    fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn child(&self, name: &str) -> Option<&Node> {
        self.children.iter().find(|c| c.name == name)
    }
}

fn parse_tree(text: &str) -> Result<Node, ApiError> {
    use crate::store::xml::{self, Lexer, TokKind};
    let bad = |e: &dyn std::fmt::Display| ApiError::qubes(format!("invalid XML: {e}"));
    let src = text.as_bytes();
    let mut lexer = Lexer::new(src, 0);
    let mut stack: Vec<Node> = vec![Node::default()];
    while let Some(tok) = lexer.next_tok().map_err(|e| bad(&e))? {
        match tok.kind {
            TokKind::Start { name, attrs, empty } => {
                let node = Node {
                    name: String::from_utf8_lossy(name.of(src)).into_owned(),
                    attrs: xml::attrs(src, attrs)
                        .map(|(k, v)| {
                            (String::from_utf8_lossy(k).into_owned(), xml::decode_attr(v))
                        })
                        .collect(),
                    ..Node::default()
                };
                if empty {
                    if let Some(parent) = stack.last_mut() {
                        parent.children.push(node);
                    }
                } else {
                    stack.push(node);
                }
            }
            TokKind::Text => {
                if let Some(n) = stack.last_mut() {
                    n.text.push_str(&xml::decode(tok.span.of(src)));
                }
            }
            TokKind::CData { inner } => {
                if let Some(n) = stack.last_mut() {
                    n.text.push_str(&String::from_utf8_lossy(inner.of(src)));
                }
            }
            TokKind::End { .. } => {
                let node = stack.pop().ok_or_else(|| bad(&"unbalanced"))?;
                stack
                    .last_mut()
                    .ok_or_else(|| bad(&"unbalanced"))?
                    .children
                    .push(node);
            }
            TokKind::Comment | TokKind::Pi | TokKind::Doctype => {}
        }
    }
    let mut root = stack.pop().ok_or_else(|| bad(&"empty"))?;
    if !stack.is_empty() {
        return Err(bad(&"unclosed element"));
    }
    root.children.pop().ok_or_else(|| bad(&"no root element"))
}

/// The rules of a `firewall.xml` text.
pub fn parse_file(text: &str) -> Result<Vec<Rule>, ApiError> {
    let root = parse_tree(text)?;
    match root.attr("version") {
        None | Some("1") => parse_v1(&root),
        Some("2") => {
            let mut rules = Vec::new();
            for rule in root
                .child("rules")
                .map(|r| r.children.as_slice())
                .unwrap_or_default()
                .iter()
                .filter(|r| r.name == "rule")
            {
                let props: Vec<(&str, &str)> = rule
                    .child("properties")
                    .map(|p| p.children.as_slice())
                    .unwrap_or_default()
                    .iter()
                    .filter(|p| p.name == "property")
                    .map(|p| (p.attr("name").unwrap_or_default(), p.text.as_str()))
                    .collect();
                rules.push(build(&props)?);
            }
            Ok(rules)
        }
        Some(v) => Err(ApiError::new(
            crate::error::ExcType::QubesVMError,
            format!("Unsupported firewall.xml version: {v}"),
        )),
    }
}

/// The legacy format (`<QubesFirewallRules policy= dns= icmp=>` with `<rule address= netmask=
/// port= toport= proto= expire=>`), converted as the reference does (§C.4).
fn parse_v1(root: &Node) -> Result<Vec<Rule>, ApiError> {
    let action = |v: Option<&str>, default: &str| -> Result<String, ApiError> {
        match v.unwrap_or(default) {
            "allow" => Ok("accept".to_string()),
            "deny" => Ok("drop".to_string()),
            other => Err(invalid(format!("Invalid policy: {other}"))),
        }
    };
    let policy = root.attr("policy").unwrap_or("deny");
    let policy_action = action(Some(policy), "deny")?;
    let opposite = if policy_action == "accept" {
        "drop"
    } else {
        "accept"
    };
    let mut rules = vec![
        build(&[
            ("action", &action(root.attr("dns"), policy)?),
            ("specialtarget", "dns"),
        ])?,
        build(&[
            ("action", &action(root.attr("icmp"), policy)?),
            ("proto", "icmp"),
        ])?,
    ];
    for r in root.children.iter().filter(|c| c.name == "rule") {
        let mut opts: Vec<(&str, String)> = vec![("action", opposite.to_string())];
        if let Some(addr) = r.attr("address") {
            let mask = r.attr("netmask").unwrap_or("32");
            opts.push(("dsthost", format!("{addr}/{mask}")));
        }
        let proto = match r.attr("proto") {
            Some("any") => None,
            Some(p) => Some(p.to_string()),
            None if r.attr("port").is_some() => Some("tcp".to_string()),
            None => None,
        };
        if let Some(p) = proto {
            opts.push(("proto", p));
        }
        if let Some(port) = r.attr("port") {
            opts.push((
                "dstports",
                match r.attr("toport") {
                    Some(to) => format!("{port}-{to}"),
                    None => port.to_string(),
                },
            ));
        }
        if let Some(t) = r.attr("expire") {
            opts.push(("expire", t.to_string()));
        }
        let refs: Vec<(&str, &str)> = opts.iter().map(|(k, v)| (*k, v.as_str())).collect();
        rules.push(build(&refs)?);
    }
    if policy_action == "accept" {
        rules.push(Rule::accept_all());
    }
    Ok(rules)
}

/// `firewall.xml` as the reference writes it (version 2, pretty-printed, no declaration):
/// only the options set, the file's value forms, expired rules left out.
pub fn file_text(rules: &[Rule], now: i64) -> String {
    let esc = |s: &str| crate::store::xml::escape_text(s).into_owned();
    let live: Vec<&Rule> = rules.iter().filter(|r| !r.expired(now)).collect();
    let mut x = String::from("<firewall version=\"2\">\n");
    if live.is_empty() {
        x.push_str("  <rules/>\n");
    } else {
        x.push_str("  <rules>\n");
        for r in live {
            x.push_str("    <rule>\n      <properties>\n");
            let mut prop = |name: &str, value: &str| {
                x.push_str(&format!(
                    "        <property name=\"{name}\">{}</property>\n",
                    esc(value)
                ));
            };
            prop(
                "action",
                match r.action {
                    Action::Accept => "accept",
                    Action::Drop => "drop",
                },
            );
            if let Some(c) = &r.comment {
                prop("comment", c);
            }
            if let Some(t) = r.expire {
                prop("expire", &t.to_string());
            }
            if let Some(Dst::V4(v) | Dst::V6(v) | Dst::Name(v)) = &r.dsthost {
                prop("dsthost", v);
            }
            if let Some(p) = r.proto {
                prop("proto", proto_name(p));
            }
            if r.dns {
                prop("specialtarget", "dns");
            }
            if let Some((lo, hi)) = r.dstports {
                let v = if lo == hi {
                    lo.to_string()
                } else {
                    format!("{lo}-{hi}")
                };
                prop("dstports", &v);
            }
            if let Some(t) = r.icmptype {
                prop("icmptype", &t.to_string());
            }
            x.push_str("      </properties>\n    </rule>\n");
        }
        x.push_str("  </rules>\n");
    }
    x.push_str("</firewall>\n");
    x
}

/// Saves the rules (mode 0664, crash-safe).
pub fn save(dir: &Path, rules: &[Rule], now: i64) -> Result<(), ApiError> {
    let path = dir.join("firewall.xml");
    crate::store::write_file_atomically(&path, file_text(rules, now).as_bytes(), Some(0o664))
        .map_err(|e| ApiError::qubes(format!("firewall save error: {e}")))
}

/// What the netvm's QubesDB gets for a client with address `addr` (§C.6): the subtree
/// replaced, `policy` drop, each live rule of the address's family at its index in the whole
/// list, then the empty entry that makes the firewall reload.
pub fn qdb_ops(rules: &[Rule], addr: &str, v6: bool, now: i64) -> Vec<QdbOp> {
    let base = format!("/qubes-firewall/{addr}");
    let mut ops = vec![
        QdbOp::Rm(format!("{base}/")),
        QdbOp::Write(format!("{base}/policy"), "drop".to_string()),
    ];
    for (i, r) in rules.iter().enumerate() {
        let other_family = matches!(
            (&r.dsthost, v6),
            (Some(Dst::V6(_)), false) | (Some(Dst::V4(_)), true)
        );
        if r.expired(now) || other_family {
            continue;
        }
        ops.push(QdbOp::Write(format!("{base}/{i:04}"), r.qdb_form()));
    }
    ops.push(QdbOp::Write(base, String::new()));
    ops
}

/// The nearest `expire` still ahead of `now`: when the reference's timer fires for this list.
pub fn next_expiry(rules: &[Rule], now: i64) -> Option<i64> {
    rules
        .iter()
        .filter_map(|r| r.expire)
        .filter(|t| *t >= now)
        .min()
}

/// The directory the helper watches for timers: a Set that saves a rule with an `expire` leaves
/// word there (`firewall-expiry`, the time), and the helper wakes up to drop the rule when it
/// expires (`qubes-admin-eventd`; §C.6). Without a helper the file waits for the next one.
pub fn timers_dir(run_dir: &Path) -> std::path::PathBuf {
    crate::events::log_dir(run_dir).join("timers")
}

/// Leaves word for the helper that a rule expires at `at` (best effort: the helper also sweeps
/// when it starts).
pub fn note_expiry(run_dir: &Path, at: i64) {
    let dir = timers_dir(run_dir);
    let written = std::fs::create_dir_all(&dir).and_then(|()| {
        crate::store::write_file_atomically(
            &dir.join("firewall-expiry"),
            format!("{at}\n").as_bytes(),
            Some(0o640),
        )
    });
    if let Err(e) = written {
        eprintln!("qubes-admin: cannot tell the helper about a firewall rule's expiry: {e}");
    }
}

/// Now, in UNIX seconds.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn next_expiry_is_the_nearest_ahead() {
        let rules: Vec<Rule> = [
            "action=accept expire=100",
            "action=drop expire=300",
            "action=drop",
            "action=accept expire=200",
        ]
        .iter()
        .map(|l| parse_api_line(l).unwrap())
        .collect();
        assert_eq!(next_expiry(&rules, 50), Some(100));
        assert_eq!(next_expiry(&rules, 100), Some(100));
        assert_eq!(next_expiry(&rules, 101), Some(200));
        assert_eq!(next_expiry(&rules, 301), None);
        assert_eq!(next_expiry(&rules[2..3], 0), None);
    }

    fn api(line: &str) -> String {
        parse_api_line(line).unwrap().api_form()
    }

    #[test]
    fn api_lines_normalised() {
        for (input, want) in [
            (
                "action=accept proto=tcp dstports=1-1024",
                "action=accept proto=tcp dstports=1-1024",
            ),
            (
                "action=drop proto=icmp comment=No ICMP",
                "action=drop proto=icmp comment=No ICMP",
            ),
            (
                "action=drop proto=udp expire=2099450306",
                "action=drop expire=2099450306 proto=udp",
            ),
            (
                "action=accept expire=2063292452 proto=tcp comment=Some comment, with spaces",
                "action=accept expire=2063292452 proto=tcp comment=Some comment, with spaces",
            ),
            (
                "action=accept dsthost=127.0.0.1",
                "action=accept dst4=127.0.0.1/32",
            ),
            (
                "action=accept dsthost=2001:abcd:efab::3",
                "action=accept dst6=2001:abcd:efab::3/128",
            ),
            (
                "action=accept dst4=qubes-os.org",
                "action=accept dsthost=qubes-os.org",
            ),
            ("action=accept dsthost=127.1", "action=accept dsthost=127.1"),
            (
                "action=accept dsthost=10.0.0.1/8",
                "action=accept dst4=10.0.0.1/8",
            ),
            (
                "action=accept proto=tcp dstports=+80",
                "action=accept proto=tcp dstports=80-80",
            ),
            (
                "action=accept proto=tcp dstports=080-0090",
                "action=accept proto=tcp dstports=80-90",
            ),
            (
                "action=accept proto=icmp icmptype=8",
                "action=accept proto=icmp icmptype=8",
            ),
            (
                "specialtarget=dns action=accept",
                "action=accept specialtarget=dns",
            ),
            ("  action=drop  ", "action=drop"),
        ] {
            assert_eq!(api(input), want, "{input}");
        }
    }

    #[test]
    fn api_lines_refused() {
        for bad in [
            "",
            "comment=only",
            "action=accept  proto=tcp",
            "action=accept proto=tcp action=drop",
            "action=accept dst4=1.2.3.4 dsthost=1.2.3.5",
            "action=accept foo=bar",
            "proto=tcp",
            "action=allow",
            "action=accept proto=TCP",
            "action=accept dstports=80",
            "action=accept proto=tcp dstports=80-70",
            "action=accept proto=tcp dstports=1-2-3",
            "action=accept proto=tcp dstports=65536",
            "action=accept proto=icmp icmptype=256",
            "action=accept proto=icmp icmptype=1000",
            "action=accept proto=tcp icmptype=1",
            "action=accept dsthost=Example.com",
            "action=accept dsthost=127/8",
            "action=accept dsthost=1.2.3.4/33",
            "action=accept dsthost=1.2.3.4/2/3",
            "action=accept specialtarget=ntp",
            "action=accept expire=+5",
            "action=accept comment=a=b",
            "action=accept comment=naïve",
        ] {
            assert!(parse_api_line(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn splitlines_as_python() {
        assert_eq!(splitlines("a\nb\r\nc\rd\x0be"), ["a", "b", "c", "d", "e"]);
        assert_eq!(splitlines("a\n"), ["a"]);
        assert_eq!(splitlines("a\n\nb"), ["a", "", "b"]);
        assert!(splitlines("").is_empty());
    }

    #[test]
    fn file_round_trip_and_forms() {
        let rules: Vec<Rule> = [
            "action=accept dsthost=192.168.0.0/24 proto=tcp dstports=80",
            "action=drop proto=udp dstports=53-54 comment=No DNS: here, there [x]",
            "action=accept expire=1000 proto=icmp icmptype=8",
            "action=drop dst6=2001:abcd:efab::3",
            "action=accept specialtarget=dns",
        ]
        .iter()
        .map(|l| parse_api_line(l).unwrap())
        .collect();
        let text = file_text(&rules, 500);
        assert_eq!(
            text,
            "<firewall version=\"2\">\n  <rules>\n    <rule>\n      <properties>\n        \
<property name=\"action\">accept</property>\n        <property name=\"dsthost\">192.168.0.0/24</property>\n        \
<property name=\"proto\">tcp</property>\n        <property name=\"dstports\">80</property>\n      \
</properties>\n    </rule>\n    <rule>\n      <properties>\n        <property name=\"action\">drop</property>\n        \
<property name=\"comment\">No DNS: here, there [x]</property>\n        <property name=\"proto\">udp</property>\n        \
<property name=\"dstports\">53-54</property>\n      </properties>\n    </rule>\n    <rule>\n      <properties>\n        \
<property name=\"action\">accept</property>\n        <property name=\"expire\">1000</property>\n        \
<property name=\"proto\">icmp</property>\n        <property name=\"icmptype\">8</property>\n      </properties>\n    </rule>\n    \
<rule>\n      <properties>\n        <property name=\"action\">drop</property>\n        \
<property name=\"dsthost\">2001:abcd:efab::3/128</property>\n      </properties>\n    </rule>\n    <rule>\n      <properties>\n        \
<property name=\"action\">accept</property>\n        <property name=\"specialtarget\">dns</property>\n      </properties>\n    </rule>\n  \
</rules>\n</firewall>\n"
        );
        assert_eq!(parse_file(&text).unwrap(), rules);
        // Saved after the expiry: the rule is gone.
        assert!(!file_text(&rules, 2000).contains("expire"));
        assert_eq!(
            file_text(&[], 0),
            "<firewall version=\"2\">\n  <rules/>\n</firewall>\n"
        );
        // QubesDB: IPv4 skips the IPv6 rule and (after 1000) the expired one, keeping indexes.
        let ops = qdb_ops(&rules, "10.137.0.5", false, 2000);
        let b = "/qubes-firewall/10.137.0.5";
        assert_eq!(
            ops,
            vec![
                QdbOp::Rm(format!("{b}/")),
                QdbOp::Write(format!("{b}/policy"), "drop".into()),
                QdbOp::Write(
                    format!("{b}/0000"),
                    "action=accept dst4=192.168.0.0/24 proto=tcp dstports=80-80".into()
                ),
                QdbOp::Write(
                    format!("{b}/0001"),
                    "action=drop proto=udp dstports=53-54".into()
                ),
                QdbOp::Write(
                    format!("{b}/0004"),
                    "action=accept specialtarget=dns".into()
                ),
                QdbOp::Write(b.into(), String::new()),
            ]
        );
        let v6 = qdb_ops(&rules, "fd09::5", true, 0);
        assert_eq!(
            v6[3],
            QdbOp::Write(
                "/qubes-firewall/fd09::5/0002".into(),
                "action=accept proto=icmp icmptype=8".into()
            )
        );
        assert_eq!(
            v6[4],
            QdbOp::Write(
                "/qubes-firewall/fd09::5/0003".into(),
                "action=drop dst6=2001:abcd:efab::3/128".into()
            )
        );
    }

    #[test]
    fn legacy_and_unknown_versions() {
        let v1 = r#"<QubesFirewallRules policy="allow" dns="allow" icmp="deny">
  <rule address="192.168.1.0" netmask="24" port="80" toport="90"/>
  <rule address="10.0.0.1" proto="any"/>
  <rule address="10.0.0.2" proto="udp" port="53" expire="1900000000"/>
</QubesFirewallRules>"#;
        let forms: Vec<String> = parse_file(v1).unwrap().iter().map(Rule::api_form).collect();
        assert_eq!(
            forms,
            [
                "action=accept specialtarget=dns",
                "action=drop proto=icmp",
                "action=drop dst4=192.168.1.0/24 proto=tcp dstports=80-90",
                "action=drop dst4=10.0.0.1/32",
                "action=drop expire=1900000000 dst4=10.0.0.2/32 proto=udp dstports=53-53",
                "action=accept",
            ]
        );
        let deny = parse_file(r#"<QubesFirewallRules policy="deny"/>"#).unwrap();
        assert_eq!(
            deny.iter().map(Rule::api_form).collect::<Vec<_>>(),
            ["action=drop specialtarget=dns", "action=drop proto=icmp"]
        );
        let e = parse_file(r#"<firewall version="3"/>"#).unwrap_err();
        assert_eq!(e.msg, "Unsupported firewall.xml version: 3");
        assert!(parse_file("<firewall version=\"2\"><rules>").is_err());
    }
}
