//! Loading a qrexec policy (`qrexec-and-policy.md` §2.1–2.5): the `policy.d` directories
//! merged by basename, the new-format rule lines, the directives (`!include`, `!include-dir`,
//! `!include-service`, `!compat-4.0`) and the legacy three-column format. Any error fails the
//! whole load: the caller denies everything.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::{Action, Params, PolicyError, Rule, Token};

/// Where the policy lives.
#[derive(Debug, Clone)]
pub struct Sources {
    /// `policy.d` directories, the first one winning for a basename present in several
    /// (`/run/qubes/policy.d`, then `/etc/qubes/policy.d`). Each must exist.
    pub dirs: Vec<PathBuf>,
    /// The R4.0 directory `!compat-4.0` reads (`/etc/qubes-rpc/policy`).
    pub compat_dir: PathBuf,
}

/// Recursion limit for includes: the reference has none and ends in a `RecursionError` (no
/// verdict at all); we fail the load instead.
const MAX_DEPTH: usize = 32;

fn err(file: &Path, line: usize, msg: impl Into<String>) -> PolicyError {
    PolicyError::Syntax {
        file: file.to_path_buf(),
        line,
        msg: msg.into(),
    }
}

fn io_err(path: &Path, e: std::io::Error) -> PolicyError {
    PolicyError::Io {
        path: path.to_path_buf(),
        msg: e.to_string(),
    }
}

/// The valid `*.policy` files of a directory, by basename (C order).
fn policy_files(dir: &Path) -> Result<BTreeMap<String, PathBuf>, PolicyError> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(dir).map_err(|e| io_err(dir, e))? {
        let entry = entry.map_err(|e| io_err(dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.ends_with(".policy") || name.starts_with('.') {
            continue;
        }
        let path = entry.path();
        // Symlinks are followed; only regular files count.
        if !std::fs::metadata(&path)
            .map(|m| m.is_file())
            .unwrap_or(false)
        {
            continue;
        }
        if !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.-".contains(&b))
        {
            return Err(err(&path, 0, format!("invalid policy file name: {name}")));
        }
        out.insert(name, path);
    }
    Ok(out)
}

/// Loads every rule, in evaluation order.
pub fn load(src: &Sources) -> Result<Vec<Rule>, PolicyError> {
    let mut files: BTreeMap<String, PathBuf> = BTreeMap::new();
    for dir in &src.dirs {
        for (name, path) in policy_files(dir)? {
            files.entry(name).or_insert(path);
        }
    }
    let mut rules = Vec::new();
    for path in files.values() {
        let base = path.parent().unwrap_or(Path::new("/")).to_path_buf();
        let mut l = Loader {
            base,
            compat_dir: &src.compat_dir,
            rules: &mut rules,
        };
        l.new_format_file(path, 0)?;
    }
    Ok(rules)
}

/// Parses policy text as if it were one `policy.d` file in `base` (tests, tools).
pub fn parse_text(text: &str, base: &Path, compat_dir: &Path) -> Result<Vec<Rule>, PolicyError> {
    let mut rules = Vec::new();
    let mut l = Loader {
        base: base.to_path_buf(),
        compat_dir,
        rules: &mut rules,
    };
    l.new_format_text(text, &base.join("<text>"), 0)?;
    Ok(rules)
}

struct Loader<'a> {
    /// The directory of the top-level file: relative include paths resolve against it.
    base: PathBuf,
    compat_dir: &'a Path,
    rules: &'a mut Vec<Rule>,
}

impl Loader<'_> {
    fn resolve(&self, p: &str) -> PathBuf {
        let p = Path::new(p);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base.join(p)
        }
    }

    fn read(&self, path: &Path, depth: usize) -> Result<String, PolicyError> {
        if depth > MAX_DEPTH {
            return Err(err(path, 0, "includes nested too deeply (a cycle?)"));
        }
        std::fs::read_to_string(path).map_err(|e| io_err(path, e))
    }

    fn new_format_file(&mut self, path: &Path, depth: usize) -> Result<(), PolicyError> {
        let text = self.read(path, depth)?;
        self.new_format_text(&text, path, depth)
    }

    fn new_format_text(
        &mut self,
        text: &str,
        path: &Path,
        depth: usize,
    ) -> Result<(), PolicyError> {
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            let n = i + 1;
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let words: Vec<&str> = line.split_whitespace().collect();
            if line.starts_with('!') {
                match words.as_slice() {
                    ["!include", p] => {
                        let p = self.resolve(p);
                        self.new_format_file(&p, depth + 1)?
                    }
                    ["!include-dir", d] => {
                        let d = self.resolve(d);
                        for f in policy_files(&d)?.values() {
                            self.new_format_file(f, depth + 1)?;
                        }
                    }
                    ["!include-service", service, argument, p] => {
                        let (service, argument) =
                            service_and_argument(service, argument).map_err(|m| err(path, n, m))?;
                        let p = self.resolve(p);
                        self.legacy_file(&p, &service, &argument, depth + 1)?;
                    }
                    ["!compat-4.0"] => self.compat(depth + 1)?,
                    _ => return Err(err(path, n, format!("invalid directive: {line}"))),
                }
                continue;
            }
            let [service, argument, source, target, action, params @ ..] = words.as_slice() else {
                return Err(err(path, n, "wrong number of fields"));
            };
            let (service, argument) =
                service_and_argument(service, argument).map_err(|m| err(path, n, m))?;
            let rule = rule(service, argument, source, target, action, params, path, n)?;
            self.rules.push(rule);
        }
        Ok(())
    }

    /// A legacy-format file (`SOURCE TARGET ACTION[,PARAM=VALUE…]`) for one service and
    /// argument; only `!include` (another legacy file) is allowed in it.
    fn legacy_file(
        &mut self,
        path: &Path,
        service: &Option<String>,
        argument: &Option<String>,
        depth: usize,
    ) -> Result<(), PolicyError> {
        let text = self.read(path, depth)?;
        for (i, raw) in text.lines().enumerate() {
            let n = i + 1;
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let line = line
                .replace("$include:", "!include ")
                .replace('$', "@")
                .replace(',', " ");
            let words: Vec<&str> = line.split_whitespace().collect();
            if line.starts_with('!') {
                match words.as_slice() {
                    ["!include", p] => {
                        let p = self.resolve(p);
                        self.legacy_file(&p, service, argument, depth + 1)?
                    }
                    _ => return Err(err(path, n, format!("invalid directive: {line}"))),
                }
                continue;
            }
            let [source, target, action, params @ ..] = words.as_slice() else {
                return Err(err(path, n, "wrong number of fields"));
            };
            let r = rule(
                service.clone(),
                argument.clone(),
                source,
                target,
                action,
                params,
                path,
                n,
            )?;
            self.rules.push(r);
        }
        Ok(())
    }

    /// `!compat-4.0`: the R4.0 per-service files, services sorted, specific arguments first
    /// (each followed by two implicit denies), the generic file last.
    fn compat(&mut self, depth: usize) -> Result<(), PolicyError> {
        let dir = self.compat_dir.to_path_buf();
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_err(&dir, e)),
        };
        // service -> (specific files by argument, generic file)
        let mut by_service: BTreeMap<String, (BTreeMap<String, PathBuf>, Option<PathBuf>)> =
            BTreeMap::new();
        for entry in entries {
            let entry = entry.map_err(|e| io_err(&dir, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path();
            if name.starts_with('.')
                || [".rpmsave", ".rpmnew", ".swp"]
                    .iter()
                    .any(|s| name.ends_with(s))
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_.+-".contains(&b))
                || !std::fs::metadata(&path)
                    .map(|m| m.is_file())
                    .unwrap_or(false)
            {
                continue;
            }
            let (service, arg) = match name.split_once('+') {
                Some((s, a)) => (s.to_string(), Some(a.to_string())),
                None => (name.clone(), None),
            };
            let slot = by_service.entry(service).or_default();
            match arg {
                Some(a) => {
                    slot.0.insert(a, path);
                }
                None => slot.1 = Some(path),
            }
        }
        for (service, (specific, generic)) in by_service {
            for (arg, path) in specific {
                let (s, a) = (Some(service.clone()), Some(format!("+{arg}")));
                self.legacy_file(&path, &s, &a, depth)?;
                for target in [Token::AnyVm, Token::AdminVm] {
                    self.rules.push(Rule {
                        service: s.clone(),
                        argument: a.clone(),
                        source: Token::AnyVm,
                        target,
                        action: Action::Deny,
                        params: Params::default(),
                        origin: (path.clone(), 0),
                    });
                }
            }
            if let Some(path) = generic {
                self.legacy_file(&path, &Some(service.clone()), &None, depth)?;
            }
        }
        Ok(())
    }
}

/// SERVICE (`*` or `[A-Za-z0-9_.-]+`) and ARGUMENT (`*` or `+…`); `None` stands for `*`.
#[allow(clippy::type_complexity)]
fn service_and_argument(
    service: &str,
    argument: &str,
) -> Result<(Option<String>, Option<String>), String> {
    let service = match service {
        "*" => None,
        s if !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b)) =>
        {
            Some(s.to_string())
        }
        s => return Err(format!("invalid service name: {s}")),
    };
    let argument = match argument {
        "*" => None,
        a if a.starts_with('+') => Some(a.to_string()),
        a => return Err(format!("invalid argument: {a}")),
    };
    if service.is_none() && argument.is_some() {
        return Err("only * argument allowed for * service".to_string());
    }
    Ok((service, argument))
}

/// Where a token may appear.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Column {
    Source,
    Target,
    Redirect,
}

fn token(s: &str, col: Column) -> Result<Token, String> {
    let t = match s {
        "*" => Token::Any,
        "@anyvm" => Token::AnyVm,
        "@adminvm" => Token::AdminVm,
        "@default" => Token::Default,
        "@dispvm" => Token::DispVm,
        _ => {
            if let Some(rest) = s.strip_prefix("@dispvm:@tag:") {
                Token::DispVmTag(rest.to_string())
            } else if let Some(rest) = s.strip_prefix("@dispvm:") {
                Token::DispVmName(rest.to_string())
            } else if let Some(rest) = s.strip_prefix("@tag:") {
                Token::Tag(rest.to_string())
            } else if let Some(rest) = s.strip_prefix("@type:") {
                Token::Type(rest.to_string())
            } else if s.starts_with('@') || s.is_empty() {
                return Err(format!("invalid token: {s}"));
            } else {
                Token::Name(s.to_string())
            }
        }
    };
    let ok = match (&t, col) {
        (Token::Default | Token::DispVm, Column::Source) => false,
        (Token::Default, Column::Redirect) => false,
        (
            Token::Any | Token::AnyVm | Token::DispVmTag(_) | Token::Tag(_) | Token::Type(_),
            Column::Redirect,
        ) => false,
        (Token::DispVmName(n) | Token::DispVmTag(n) | Token::Tag(n) | Token::Type(n), _)
            if n.is_empty() =>
        {
            false
        }
        _ => true,
    };
    if ok {
        Ok(t)
    } else {
        Err(format!("invalid token here: {s}"))
    }
}

#[allow(clippy::too_many_arguments)]
fn rule(
    service: Option<String>,
    argument: Option<String>,
    source: &str,
    target: &str,
    action: &str,
    params: &[&str],
    path: &Path,
    n: usize,
) -> Result<Rule, PolicyError> {
    let e = |m: String| err(path, n, m);
    let source = token(source, Column::Source).map_err(e)?;
    let target = token(target, Column::Target).map_err(e)?;
    let action = match action {
        "allow" => Action::Allow,
        "deny" => Action::Deny,
        "ask" => Action::Ask,
        a => return Err(e(format!("invalid action: {a}"))),
    };
    let mut p = Params::default();
    let mut seen: Vec<&str> = Vec::new();
    for piece in params {
        let Some((key, value)) = piece.split_once('=') else {
            return Err(e(format!("invalid action parameter syntax: {piece:?}")));
        };
        if seen.contains(&key) {
            return Err(e(format!("parameter given twice: {key}")));
        }
        seen.push(key);
        let allowed = match action {
            Action::Allow => ["target", "user", "notify", "autostart"].contains(&key),
            Action::Ask => {
                ["target", "default_target", "user", "notify", "autostart"].contains(&key)
            }
            Action::Deny => key == "notify",
        };
        if !allowed {
            return Err(e(format!("invalid parameter for {action:?}: {key}")));
        }
        let boolean = || match value {
            "yes" => Ok(true),
            "no" => Ok(false),
            v => Err(e(format!("{key}= must be yes or no, not {v}"))),
        };
        match key {
            "target" => p.target = Some(token(value, Column::Redirect).map_err(e)?),
            "default_target" => p.default_target = Some(token(value, Column::Redirect).map_err(e)?),
            "user" => {
                if value.is_empty() {
                    return Err(e("empty user".to_string()));
                }
                p.user = Some(value.to_string())
            }
            "notify" => p.notify = Some(boolean()?),
            "autostart" => p.autostart = Some(boolean()?),
            _ => {}
        }
    }
    if action == Action::Allow && target == Token::Default && p.target.is_none() {
        return Err(e("allow to @default needs target=".to_string()));
    }
    Ok(Rule {
        service,
        argument,
        source,
        target,
        action,
        params: p,
        origin: (path.to_path_buf(), n),
    })
}
