//! The one place where errors become wire exception names.
//!
//! Every module has its own `thiserror` enum; each converts into [`ApiError`], which carries the
//! exact Python class name the reference sends (`2\0<Type>\0\0<message>\0`). The client
//! (qubesadmin) maps these names to its own exception classes, so they must match exactly.

use std::fmt;

/// Exception type names, spelled as the reference's Python classes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(clippy::enum_variant_names)]
pub enum ExcType {
    QubesException,
    ProtocolError,
    PermissionDenied,
    QubesVMNotFoundError,
    QubesVMInvalidUUIDError,
    QubesVMAlreadyExistsError,
    QubesVMError,
    QubesVMInUseError,
    QubesVMNotStartedError,
    QubesVMNotRunningError,
    QubesVMNotPausedError,
    QubesVMNotHaltedError,
    QubesVMShutdownTimeoutError,
    QubesMemoryError,
    QubesNoTemplateError,
    QubesValueError,
    QubesPropertyValueError,
    QubesNoSuchPropertyError,
    QubesFeatureNotFoundError,
    QubesTagNotFoundError,
    QubesLabelNotFoundError,
    QubesLabelInUseError,
    QubesInvalidTagError,
    QubesInvalidLabelError,
    QubesInvalidLabelValueError,
    QubesNotImplementedError,
    StoragePoolException,
    QubesPoolInUseError,
}

impl ExcType {
    /// The name sent on the wire.
    pub fn as_str(self) -> &'static str {
        use ExcType::*;
        match self {
            QubesException => "QubesException",
            ProtocolError => "ProtocolError",
            PermissionDenied => "PermissionDenied",
            QubesVMNotFoundError => "QubesVMNotFoundError",
            QubesVMInvalidUUIDError => "QubesVMInvalidUUIDError",
            QubesVMAlreadyExistsError => "QubesVMAlreadyExistsError",
            QubesVMError => "QubesVMError",
            QubesVMInUseError => "QubesVMInUseError",
            QubesVMNotStartedError => "QubesVMNotStartedError",
            QubesVMNotRunningError => "QubesVMNotRunningError",
            QubesVMNotPausedError => "QubesVMNotPausedError",
            QubesVMNotHaltedError => "QubesVMNotHaltedError",
            QubesVMShutdownTimeoutError => "QubesVMShutdownTimeoutError",
            QubesMemoryError => "QubesMemoryError",
            QubesNoTemplateError => "QubesNoTemplateError",
            QubesValueError => "QubesValueError",
            QubesPropertyValueError => "QubesPropertyValueError",
            QubesNoSuchPropertyError => "QubesNoSuchPropertyError",
            QubesFeatureNotFoundError => "QubesFeatureNotFoundError",
            QubesTagNotFoundError => "QubesTagNotFoundError",
            QubesLabelNotFoundError => "QubesLabelNotFoundError",
            QubesLabelInUseError => "QubesLabelInUseError",
            QubesInvalidTagError => "QubesInvalidTagError",
            QubesInvalidLabelError => "QubesInvalidLabelError",
            QubesInvalidLabelValueError => "QubesInvalidLabelValueError",
            QubesNotImplementedError => "QubesNotImplementedError",
            StoragePoolException => "StoragePoolException",
            QubesPoolInUseError => "QubesPoolInUseError",
        }
    }
}

/// An error that becomes one exception frame. Handlers return this.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub ty: ExcType,
    pub msg: String,
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.ty.as_str(), self.msg)
    }
}

impl std::error::Error for ApiError {}

impl ApiError {
    pub fn new(ty: ExcType, msg: impl Into<String>) -> Self {
        ApiError {
            ty,
            msg: msg.into(),
        }
    }
    pub fn protocol(msg: impl Into<String>) -> Self {
        Self::new(ExcType::ProtocolError, msg)
    }
    pub fn qubes(msg: impl Into<String>) -> Self {
        Self::new(ExcType::QubesException, msg)
    }
    pub fn value(msg: impl Into<String>) -> Self {
        Self::new(ExcType::QubesValueError, msg)
    }
    pub fn property_value(msg: impl Into<String>) -> Self {
        Self::new(ExcType::QubesPropertyValueError, msg)
    }
    pub fn permission(msg: impl Into<String>) -> Self {
        Self::new(ExcType::PermissionDenied, msg)
    }
    /// `QubesVMNotFoundError "No such domain: '<name>'"`.
    pub fn vm_not_found(name: &str) -> Self {
        Self::new(
            ExcType::QubesVMNotFoundError,
            format!("No such domain: '{name}'"),
        )
    }
    /// `QubesNoSuchPropertyError "Invalid property '<p>' of <holder>"`.
    pub fn no_such_property(prop: &str, holder: &str) -> Self {
        Self::new(
            ExcType::QubesNoSuchPropertyError,
            format!("Invalid property '{prop}' of {holder}"),
        )
    }
    /// Where the reference drops the connection with no reply (a Python exception that is not
    /// a Qubes one), we answer this instead: a clear frame, never silence.
    pub fn no_reply_in_reference(msg: impl Into<String>) -> Self {
        Self::new(ExcType::QubesException, msg)
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        ApiError::qubes(e.to_string())
    }
}

impl From<crate::events::EventLogError> for ApiError {
    fn from(e: crate::events::EventLogError) -> Self {
        ApiError::qubes(e.to_string())
    }
}

impl From<crate::storage::StorageError> for ApiError {
    fn from(e: crate::storage::StorageError) -> Self {
        use crate::storage::StorageError;
        let ty = match e {
            StorageError::Pool(_) => ExcType::StoragePoolException,
            StorageError::Io { .. } => ExcType::QubesException,
            StorageError::Unsupported { .. } => ExcType::QubesNotImplementedError,
        };
        ApiError::new(ty, e.to_string())
    }
}

impl From<crate::runtime::dom0::ServiceError> for ApiError {
    fn from(e: crate::runtime::dom0::ServiceError) -> Self {
        use crate::runtime::dom0::ServiceError;
        let ty = match e {
            ServiceError::NoMemory(_) => ExcType::QubesMemoryError,
            ServiceError::QrexecTimeout { .. } | ServiceError::Qrexec(_) => ExcType::QubesVMError,
            _ => ExcType::QubesException,
        };
        ApiError::new(ty, e.to_string())
    }
}

impl From<crate::runtime::HvError> for ApiError {
    fn from(e: crate::runtime::HvError) -> Self {
        ApiError::qubes(e.to_string())
    }
}
