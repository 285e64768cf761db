//! The helper's line protocol (one request per connection), also printed by
//! `qubes-admin-eventd --once`.
//!
//! ```text
//! request:  list\n  |  info <uuid>\n  |  op <verb> <uuid>\n  |  define <length>\n<domain XML>
//! reply:    ok\n <record>* end\n  |  err <message>\n
//! records:  host <memory_mib> <cpus>\n
//!           domain <uuid> <id> <state> <active 0|1> <mem_kib> <max_mem_kib> <vcpus> <cpu_time_ns> <name>\n
//! ```
//!
//! `<state>` is libvirt's numeric `virDomainState`; `<name>` is last and `%`-escapes `%`, CR and
//! LF. A `list` reply has one `host` record and any number of `domain` records; an `info` reply
//! has zero (no such domain) or one `domain` record; `op` and `define` replies have none. A reply
//! without its `end` line is incomplete and rejected, so a helper that dies mid-reply never
//! yields a partial answer. `<verb>` is one of [`Op`]'s words; `define`'s XML is exactly
//! `<length>` bytes (at most [`MAX_DEFINE`]).

use super::{DomState, DomainRuntime, HostInfo, Runtime};

/// Longest request line the helper reads.
pub const MAX_REQUEST_LINE: usize = 128;
/// Largest domain XML a `define` carries.
pub const MAX_DEFINE: usize = 1 << 20;

/// A lifecycle operation on one domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Start the defined domain with its vCPUs paused (`virDomainCreateWithFlags(PAUSED)`).
    StartPaused,
    Resume,
    /// Pause the vCPUs (`virDomainSuspend`).
    Pause,
    /// Ask the guest to shut down.
    Shutdown,
    /// Stop it at once (`virDomainDestroy`).
    Destroy,
    /// Remove the (inactive) definition.
    Undefine,
    /// Wake a domain up from PM suspend (`virDomainPMWakeup`).
    PmWakeup,
}

impl Op {
    pub const ALL: [Op; 7] = [
        Op::StartPaused,
        Op::Resume,
        Op::Pause,
        Op::Shutdown,
        Op::Destroy,
        Op::Undefine,
        Op::PmWakeup,
    ];

    pub fn word(self) -> &'static str {
        match self {
            Op::StartPaused => "start-paused",
            Op::Resume => "resume",
            Op::Pause => "pause",
            Op::Shutdown => "shutdown",
            Op::Destroy => "destroy",
            Op::Undefine => "undefine",
            Op::PmWakeup => "pm-wakeup",
        }
    }

    pub fn from_word(w: &str) -> Option<Op> {
        Op::ALL.into_iter().find(|o| o.word() == w)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtoError {
    /// The other side answered `err <message>`.
    #[error("{0}")]
    Remote(String),
    #[error("malformed reply: {0}")]
    Malformed(String),
    #[error("bad request: {0}")]
    BadRequest(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    List,
    /// Live query of one domain, by canonical (lowercase) UUID.
    Info(String),
    /// A lifecycle operation on one domain (by canonical UUID).
    Op(Op, String),
    /// Define (or redefine) a domain from its XML.
    Define(String),
}

/// Whether `s` looks like a UUID (36 chars, hex digits and dashes at the usual places).
pub fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

impl Request {
    pub fn encode(&self) -> String {
        match self {
            Request::List => "list\n".to_string(),
            Request::Info(u) => format!("info {u}\n"),
            Request::Op(op, u) => format!("op {} {u}\n", op.word()),
            Request::Define(xml) => format!("define {}\n{xml}", xml.len()),
        }
    }

    /// Parses one request line (with or without its newline). A `define` line yields
    /// `Define` with an empty XML and the length still to read: see [`define_length`].
    pub fn parse(line: &str) -> Result<Request, ProtoError> {
        let line = line.strip_suffix('\n').unwrap_or(line);
        let mut words = line.split(' ');
        match (words.next(), words.next(), words.next(), words.next()) {
            (Some("list"), None, None, None) => Ok(Request::List),
            (Some("info"), Some(u), None, None) if is_uuid(u) => {
                Ok(Request::Info(u.to_ascii_lowercase()))
            }
            (Some("op"), Some(w), Some(u), None) if is_uuid(u) => match Op::from_word(w) {
                Some(op) => Ok(Request::Op(op, u.to_ascii_lowercase())),
                None => Err(ProtoError::BadRequest(format!("unknown operation {w:?}"))),
            },
            (Some("define"), Some(_), None, None) if define_length(line).is_some() => {
                Ok(Request::Define(String::new()))
            }
            _ => Err(ProtoError::BadRequest(format!("unknown request {line:?}"))),
        }
    }
}

/// The XML length a `define <length>` line announces (at most [`MAX_DEFINE`]).
pub fn define_length(line: &str) -> Option<usize> {
    let n: usize = line
        .strip_suffix('\n')
        .unwrap_or(line)
        .strip_prefix("define ")?
        .parse()
        .ok()?;
    (n <= MAX_DEFINE).then_some(n)
}

/// The reply to a successful `op` or `define`.
pub fn encode_done() -> String {
    "ok\nend\n".to_string()
}

/// Reads an `op`/`define` reply: success, or the error it reports.
pub fn decode_done(reply: &str) -> Result<(), ProtoError> {
    let lines = records(reply)?;
    match lines.first() {
        None => Ok(()),
        Some(l) => Err(ProtoError::Malformed(format!("unexpected record {l:?}"))),
    }
}

fn escape_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        match c {
            '%' => out.push_str("%25"),
            '\n' => out.push_str("%0A"),
            '\r' => out.push_str("%0D"),
            c => out.push(c),
        }
    }
    out
}

fn unescape_name(s: &str) -> Result<String, ProtoError> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(pos) = rest.find('%') {
        out.push_str(rest.get(..pos).unwrap_or_default());
        let code = rest.get(pos + 1..pos + 3);
        let c = match code {
            Some("25") => '%',
            Some("0A") => '\n',
            Some("0D") => '\r',
            _ => return Err(ProtoError::Malformed(format!("bad escape in name {s:?}"))),
        };
        out.push(c);
        rest = rest.get(pos + 3..).unwrap_or_default();
    }
    out.push_str(rest);
    Ok(out)
}

fn push_domain(out: &mut String, d: &DomainRuntime) {
    out.push_str(&format!(
        "domain {} {} {} {} {} {} {} {} {}\n",
        d.uuid,
        d.id,
        d.state.code(),
        u8::from(d.active),
        d.mem_kib,
        d.max_mem_kib,
        d.vcpus,
        d.cpu_time_ns,
        escape_name(&d.name)
    ));
}

/// The reply to `list`.
pub fn encode_list(rt: &Runtime) -> String {
    let mut out = format!("ok\nhost {} {}\n", rt.host.memory_mib, rt.host.cpus);
    for d in &rt.domains {
        push_domain(&mut out, d);
    }
    out.push_str("end\n");
    out
}

/// The reply to `info`.
pub fn encode_info(d: Option<&DomainRuntime>) -> String {
    let mut out = "ok\n".to_string();
    if let Some(d) = d {
        push_domain(&mut out, d);
    }
    out.push_str("end\n");
    out
}

/// An error reply (the message is kept on one line).
pub fn encode_error(msg: &str) -> String {
    let one_line: String = msg
        .chars()
        .map(|c| if c == '\n' || c == '\r' { ' ' } else { c })
        .collect();
    format!("err {one_line}\n")
}

fn num<T: std::str::FromStr>(field: Option<&str>, what: &str, line: &str) -> Result<T, ProtoError> {
    field
        .and_then(|f| f.parse().ok())
        .ok_or_else(|| ProtoError::Malformed(format!("bad {what} in {line:?}")))
}

fn parse_domain(line: &str) -> Result<DomainRuntime, ProtoError> {
    let mut f = line.splitn(10, ' ');
    if f.next() != Some("domain") {
        return Err(ProtoError::Malformed(format!(
            "expected a domain record, got {line:?}"
        )));
    }
    let uuid = f.next().filter(|u| is_uuid(u)).map(str::to_ascii_lowercase);
    let Some(uuid) = uuid else {
        return Err(ProtoError::Malformed(format!("bad uuid in {line:?}")));
    };
    let id: i64 = num(f.next(), "id", line)?;
    let code: u32 = num(f.next(), "state", line)?;
    let state = DomState::from_code(code)
        .ok_or_else(|| ProtoError::Malformed(format!("unknown domain state {code} in {line:?}")))?;
    let active = match f.next() {
        Some("0") => false,
        Some("1") => true,
        _ => {
            return Err(ProtoError::Malformed(format!(
                "bad active flag in {line:?}"
            )))
        }
    };
    let mem_kib = num(f.next(), "mem_kib", line)?;
    let max_mem_kib = num(f.next(), "max_mem_kib", line)?;
    let vcpus = num(f.next(), "vcpus", line)?;
    let cpu_time_ns = num(f.next(), "cpu_time_ns", line)?;
    let name = unescape_name(
        f.next()
            .ok_or_else(|| ProtoError::Malformed(format!("no name in {line:?}")))?,
    )?;
    Ok(DomainRuntime {
        name,
        uuid,
        id,
        state,
        active,
        mem_kib,
        max_mem_kib,
        vcpus,
        cpu_time_ns,
    })
}

/// Splits a reply into its record lines; `err` becomes [`ProtoError::Remote`].
fn records(reply: &str) -> Result<Vec<&str>, ProtoError> {
    if let Some(msg) = reply.strip_prefix("err ") {
        return Err(ProtoError::Remote(msg.trim_end_matches('\n').to_string()));
    }
    let Some(body) = reply.strip_prefix("ok\n") else {
        let first = reply.lines().next().unwrap_or_default();
        return Err(ProtoError::Malformed(format!("unexpected reply {first:?}")));
    };
    // The end line must be a whole line: a reply cut right after a record whose name ends in
    // "end" must not pass for complete.
    let body = if body == "end\n" {
        ""
    } else {
        body.strip_suffix("\nend\n")
            .ok_or_else(|| ProtoError::Malformed("incomplete reply (no end line)".to_string()))?
    };
    Ok(body.lines().collect())
}

pub fn decode_list(reply: &str) -> Result<Runtime, ProtoError> {
    let lines = records(reply)?;
    let mut host = None;
    let mut domains = Vec::new();
    for line in lines {
        if let Some(rest) = line.strip_prefix("host ") {
            let mut f = rest.split(' ');
            let memory_mib = num(f.next(), "host memory", line)?;
            let cpus = num(f.next(), "host cpus", line)?;
            if f.next().is_some() || host.is_some() {
                return Err(ProtoError::Malformed(format!(
                    "unexpected host record {line:?}"
                )));
            }
            host = Some(HostInfo { memory_mib, cpus });
        } else {
            domains.push(parse_domain(line)?);
        }
    }
    let host = host.ok_or_else(|| ProtoError::Malformed("no host record".to_string()))?;
    Ok(Runtime { host, domains })
}

pub fn decode_info(reply: &str) -> Result<Option<DomainRuntime>, ProtoError> {
    let lines = records(reply)?;
    match lines.as_slice() {
        [] => Ok(None),
        [line] => parse_domain(line).map(Some),
        _ => Err(ProtoError::Malformed(
            "more than one domain in an info reply".to_string(),
        )),
    }
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]
mod tests {
    use super::*;

    fn dom(name: &str) -> DomainRuntime {
        DomainRuntime {
            name: name.to_string(),
            uuid: "e4b06ce6-0741-47a8-bce4-2c8218072e8c".to_string(),
            id: 3,
            state: DomState::Paused,
            active: true,
            mem_kib: 1024,
            max_mem_kib: 4096,
            vcpus: 2,
            cpu_time_ns: 123456789,
        }
    }

    #[test]
    fn list_round_trip() {
        let rt = Runtime {
            host: HostInfo {
                memory_mib: 3072,
                cpus: 16,
            },
            domains: vec![dom("vm0000"), dom("odd name %\nx")],
        };
        let s = encode_list(&rt);
        assert!(s.starts_with("ok\nhost 3072 16\ndomain e4b06ce6-0741-47a8-bce4-2c8218072e8c 3 3 1 1024 4096 2 123456789 vm0000\n"));
        assert_eq!(decode_list(&s), Ok(rt));
    }

    #[test]
    fn info_round_trip() {
        let d = dom("a");
        assert_eq!(decode_info(&encode_info(Some(&d))), Ok(Some(d)));
        assert_eq!(decode_info(&encode_info(None)), Ok(None));
    }

    #[test]
    fn errors_and_truncation() {
        assert_eq!(
            decode_list(&encode_error("libvirt\ndown")),
            Err(ProtoError::Remote("libvirt down".into()))
        );
        let full = encode_list(&Runtime {
            host: HostInfo {
                memory_mib: 1,
                cpus: 1,
            },
            domains: vec![dom("a")],
        });
        let cut = full.get(..full.len() - 4).unwrap_or_default();
        assert!(matches!(decode_list(cut), Err(ProtoError::Malformed(_))));
        assert!(matches!(
            decode_list("ok\nend\n"),
            Err(ProtoError::Malformed(_))
        ));
        assert!(matches!(
            decode_list("ok\nhost 1 1\nbogus\nend\n"),
            Err(ProtoError::Malformed(_))
        ));
        assert!(matches!(decode_list(""), Err(ProtoError::Malformed(_))));
        // Cut right after a record whose name ends in "end": still incomplete.
        let legend = encode_list(&Runtime {
            host: HostInfo {
                memory_mib: 1,
                cpus: 1,
            },
            domains: vec![dom("legend"), dom("b")],
        });
        let cut = legend.get(..legend.find("legend\n").unwrap() + 7).unwrap();
        assert!(cut.ends_with("end\n"));
        assert!(matches!(decode_list(cut), Err(ProtoError::Malformed(_))));
        let info = encode_info(Some(&dom("friend")));
        let cut = info.strip_suffix("end\n").unwrap();
        assert!(matches!(decode_info(cut), Err(ProtoError::Malformed(_))));
    }

    #[test]
    fn requests() {
        assert_eq!(Request::parse("list\n"), Ok(Request::List));
        let u = "E4B06CE6-0741-47A8-BCE4-2C8218072E8C";
        assert_eq!(
            Request::parse(&format!("info {u}")),
            Ok(Request::Info(u.to_ascii_lowercase()))
        );
        assert!(Request::parse("info ../../etc").is_err());
        assert!(Request::parse("list x").is_err());
        assert_eq!(Request::parse(&Request::List.encode()), Ok(Request::List));
    }

    #[test]
    fn lifecycle_requests() {
        let u = "e4b06ce6-0741-47a8-bce4-2c8218072e8c";
        for op in Op::ALL {
            let r = Request::Op(op, u.to_string());
            assert_eq!(Request::parse(&r.encode()), Ok(r));
        }
        assert_eq!(
            Request::parse(&format!("op start-paused {u}")),
            Ok(Request::Op(Op::StartPaused, u.into()))
        );
        assert!(Request::parse(&format!("op reboot {u}")).is_err());
        assert!(Request::parse("op destroy ../x").is_err());
        let xml = "<domain/>";
        let enc = Request::Define(xml.into()).encode();
        assert_eq!(enc, "define 9\n<domain/>");
        let line = enc.split('\n').next().unwrap();
        assert_eq!(define_length(line), Some(9));
        assert_eq!(Request::parse(line), Ok(Request::Define(String::new())));
        assert_eq!(define_length(&format!("define {}", MAX_DEFINE + 1)), None);
        assert!(Request::parse("define x").is_err());
        assert_eq!(decode_done(&encode_done()), Ok(()));
        assert_eq!(
            decode_done("err nope\n"),
            Err(ProtoError::Remote("nope".into()))
        );
        assert!(decode_done("ok\n").is_err(), "no end line");
        assert!(decode_done("ok\nhost 1 1\nend\n").is_err());
    }
}
