//! The wire layer: bytes in, bytes out. Request framing of both front ends and reply framing
//! (this file), VM-reference syntax ([`vm_ref`]), the validators for names callers supply
//! ([`names`]) and the Python rules the wire inherits ([`python`]). Pure functions: nothing here
//! reads qubes.xml, so every layer may use them.
//!
//! This is the only layer that sees untrusted request bytes. It turns them into a
//! [`RawRequest`] whose fields are still byte strings (their meaning, e.g. ASCII-ness or VM name
//! syntax, is checked by `api::request` in the reference's order, with this layer's parsers).

pub mod names;
pub mod python;
pub mod vm_ref;

use crate::error::ApiError;

/// qubesd refuses requests (header + payload) larger than this.
pub const MAX_REQUEST: usize = 65536;

/// Where a call is addressed: `name <vm>` or `keyword <kw>` (only `adminvm` is valid).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Name(Vec<u8>),
    Keyword(Vec<u8>),
}

/// One request as framed by qrexec / the socket, not yet interpreted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawRequest {
    pub method: Vec<u8>,
    pub arg: Vec<u8>,
    pub src: Vec<u8>,
    pub target: Target,
    pub payload: Vec<u8>,
}

/// Splits `method+arg` at the first `+` (arg may contain more `+`, may be empty).
pub fn split_service(service: &[u8]) -> (Vec<u8>, Vec<u8>) {
    match memchr::memchr(b'+', service) {
        Some(i) => (
            service.get(..i).unwrap_or_default().to_vec(),
            service.get(i + 1..).unwrap_or_default().to_vec(),
        ),
        None => (service.to_vec(), Vec::new()),
    }
}

/// Parses the qubesd socket framing:
/// `<method>+<arg> <src> <name|keyword> <dest>\0<payload>`.
///
/// Where qubesd aborts the connection without a reply (no NUL, fewer than four header fields,
/// an unknown target type, too long), we return a clear exception instead.
pub fn parse_socket_request(buf: &[u8]) -> Result<RawRequest, ApiError> {
    if buf.len() > MAX_REQUEST {
        return Err(too_long(buf.len()));
    }
    let nul = memchr::memchr(0, buf)
        .ok_or_else(|| ApiError::protocol("framing error: no NUL byte after the request header"))?;
    let header = buf.get(..nul).unwrap_or_default();
    let payload = buf.get(nul + 1..).unwrap_or_default().to_vec();
    let mut fields = header.splitn(4, |&b| b == b' ');
    let (Some(meth_arg), Some(src), Some(ttype), Some(dest)) =
        (fields.next(), fields.next(), fields.next(), fields.next())
    else {
        return Err(ApiError::protocol(
            "framing error: expected '<method>+<arg> <source> <target-type> <target>' header",
        ));
    };
    let target = match ttype {
        b"name" => Target::Name(dest.to_vec()),
        b"keyword" => Target::Keyword(dest.to_vec()),
        other => {
            return Err(ApiError::protocol(format!(
                "framing error: unknown target type '{}'",
                String::from_utf8_lossy(other)
            )))
        }
    };
    let (method, arg) = split_service(meth_arg);
    Ok(RawRequest {
        method,
        arg,
        src: src.to_vec(),
        target,
        payload,
    })
}

/// The exception sent for a request over [`MAX_REQUEST`] bytes.
pub fn too_long(len: usize) -> ApiError {
    ApiError::protocol(format!(
        "request too long: {len} bytes or more (at most {MAX_REQUEST} bytes of header and payload)"
    ))
}

/// Builds a request from qrexec's exec-service environment (`QREXEC_*` variables).
///
/// `service_full_name` is `QREXEC_SERVICE_FULL_NAME`; the request size limit applies to what
/// qrexec would have sent qubesd for this call (the service descriptor
/// `<service> <src> <name|keyword> <target>\0`, see [`exec_descriptor_len`]) plus the payload,
/// so both front ends draw the 65,536-byte line at the same place.
pub fn from_exec_env(
    service_full_name: &[u8],
    remote_domain: &[u8],
    target_type: Option<&[u8]>,
    target: Option<&[u8]>,
    target_keyword: Option<&[u8]>,
    payload: Vec<u8>,
) -> Result<RawRequest, ApiError> {
    let (method, arg) = split_service(service_full_name);
    let target = match target_type {
        Some(b"keyword") => Target::Keyword(target_keyword.unwrap_or_default().to_vec()),
        Some(b"name") | None => Target::Name(target.unwrap_or_default().to_vec()),
        Some(other) => {
            return Err(ApiError::protocol(format!(
                "unknown QREXEC_REQUESTED_TARGET_TYPE '{}'",
                String::from_utf8_lossy(other)
            )))
        }
    };
    let header_len = exec_descriptor_len(service_full_name, remote_domain, &target);
    if header_len + payload.len() > MAX_REQUEST {
        return Err(too_long(header_len + payload.len()));
    }
    Ok(RawRequest {
        method,
        arg,
        src: remote_domain.to_vec(),
        target,
        payload,
    })
}

/// Length of the service descriptor qrexec writes to qubesd's socket for this call,
/// `<service> <src> <name|keyword> <target>\0`: what the reference counts against
/// [`MAX_REQUEST`] besides the payload.
pub fn exec_descriptor_len(
    service_full_name: &[u8],
    remote_domain: &[u8],
    target: &Target,
) -> usize {
    let (ttype, dest): (&[u8], &[u8]) = match target {
        Target::Name(n) => (b"name", n),
        Target::Keyword(k) => (b"keyword", k),
    };
    service_full_name.len() + 1 + remote_domain.len() + 1 + ttype.len() + 1 + dest.len() + 1
}

/// `0\0<body>`.
pub fn frame_ok(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 2);
    out.extend_from_slice(b"0\0");
    out.extend_from_slice(body);
    out
}

/// `2\0<Type>\0<traceback>\0<message>\0` (we never send a traceback).
///
/// The message ends at the frame's last NUL, so a NUL inside it (a caller's argument or value
/// quoted back) would split the frame into extra fields: it is written as `\x00` instead.
pub fn frame_exception(e: &ApiError) -> Vec<u8> {
    let mut out = Vec::with_capacity(e.msg.len() + 40);
    out.extend_from_slice(b"2\0");
    out.extend_from_slice(e.ty.as_str().as_bytes());
    out.extend_from_slice(b"\0\0");
    for (i, part) in e.msg.as_bytes().split(|&b| b == 0).enumerate() {
        if i > 0 {
            out.extend_from_slice(b"\\x00");
        }
        out.extend_from_slice(part);
    }
    out.push(0);
    out
}

/// Frames a handler result.
pub fn frame(result: &Result<Vec<u8>, ApiError>) -> Vec<u8> {
    match result {
        Ok(body) => frame_ok(body),
        Err(e) => frame_exception(e),
    }
}

/// `1\0<subject>\0<event>\0(<key>\0<value>\0)*\0`; subject empty for the app object.
pub fn frame_event(subject: &str, event: &str, kwargs: &[(String, String)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(b"1\0");
    out.extend_from_slice(subject.as_bytes());
    out.push(0);
    out.extend_from_slice(event.as_bytes());
    out.push(0);
    for (k, v) in kwargs {
        out.extend_from_slice(k.as_bytes());
        out.push(0);
        out.extend_from_slice(v.as_bytes());
        out.push(0);
    }
    out.push(0);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_framing() {
        let r = parse_socket_request(b"admin.vm.property.Get+label dom0 name vm1\0").unwrap();
        assert_eq!(r.method, b"admin.vm.property.Get");
        assert_eq!(r.arg, b"label");
        assert_eq!(r.src, b"dom0");
        assert_eq!(r.target, Target::Name(b"vm1".to_vec()));
        assert!(r.payload.is_empty());
        let r = parse_socket_request(b"a+b+c src keyword adminvm\0pay\0load").unwrap();
        assert_eq!(
            (r.method.as_slice(), r.arg.as_slice()),
            (&b"a"[..], &b"b+c"[..])
        );
        assert_eq!(r.payload, b"pay\0load");
        // the 4th field keeps further spaces
        let r = parse_socket_request(b"m+ s name a b\0").unwrap();
        assert_eq!(r.target, Target::Name(b"a b".to_vec()));
        assert!(parse_socket_request(b"admin.vm.List dom0\0").is_err());
        assert!(parse_socket_request(b"admin.vm.List+ dom0 name dom0").is_err());
        assert!(parse_socket_request(b"m+ s other x\0").is_err());
        let big = vec![b'x'; MAX_REQUEST + 1];
        assert!(parse_socket_request(&big).is_err());
    }

    /// Regression (hostile table, oversized rows): exec-service mode used to estimate the
    /// header as `service + src + 16` bytes, refusing a 65,536-byte request to `name vm0001`
    /// and accepting a 65,537-byte one to `keyword adminvm`. The limit now applies to the exact
    /// descriptor qrexec sends qubesd, as in socket mode.
    #[test]
    fn exec_size_limit_counts_the_exact_descriptor() {
        let svc = b"admin.vm.property.Set+kernelopts";
        // `admin.vm.property.Set+kernelopts dom0 name vm0001\0`
        let desc = svc.len() + 1 + 4 + 1 + 4 + 1 + 6 + 1;
        assert_eq!(
            exec_descriptor_len(svc, b"dom0", &Target::Name(b"vm0001".to_vec())),
            desc
        );
        let req = |n: usize, ty: &[u8], t: &[u8]| {
            from_exec_env(svc, b"dom0", Some(ty), Some(t), Some(t), vec![b'x'; n])
        };
        assert!(req(MAX_REQUEST - desc, b"name", b"vm0001").is_ok());
        let e = req(MAX_REQUEST - desc + 1, b"name", b"vm0001").unwrap_err();
        assert!(
            e.msg.starts_with("request too long: 65537 bytes"),
            "{}",
            e.msg
        );
        // keyword targets: `... keyword adminvm\0` is 4 bytes longer than `... name vm0001\0`
        assert!(req(MAX_REQUEST - desc - 4, b"keyword", b"adminvm").is_ok());
        assert!(req(MAX_REQUEST - desc - 3, b"keyword", b"adminvm").is_err());
        // QREXEC_REQUESTED_TARGET_TYPE unset counts as `name`
        let unset = from_exec_env(
            svc,
            b"dom0",
            None,
            Some(b"vm0001"),
            None,
            vec![b'x'; MAX_REQUEST - desc],
        );
        assert!(unset.is_ok());
    }

    /// Regression (fuzz target `dispatch`, fuzz/regressions/dispatch/nul-in-message): a
    /// library caller's argument with a NUL, quoted back in the message
    /// (`Feature not set for domain disp1: fwfeat\x11\0vcpus`), split the exception frame into
    /// four fields.
    #[test]
    fn exception_message_never_splits_the_frame() {
        let e = ApiError::new(
            crate::error::ExcType::QubesFeatureNotFoundError,
            "Feature not set for domain disp1: fwfeat\x11\0vcpus\0",
        );
        assert_eq!(
            frame_exception(&e),
            b"2\0QubesFeatureNotFoundError\0\0Feature not set for domain disp1: fwfeat\x11\\x00vcpus\\x00\0"
        );
    }

    #[test]
    fn reply_frames() {
        assert_eq!(frame(&Ok(b"x".to_vec())), b"0\0x");
        let e = ApiError::new(crate::error::ExcType::QubesValueError, "");
        assert_eq!(frame(&Err(e)), b"2\0QubesValueError\0\0\0");
        assert_eq!(
            frame_event("vm1", "domain-tag-add:t1", &[("tag".into(), "t1".into())]),
            b"1\0vm1\0domain-tag-add:t1\0tag\0t1\0\0"
        );
        assert_eq!(
            frame_event("", "connection-established", &[]),
            b"1\0\0connection-established\0\0"
        );
    }
}
