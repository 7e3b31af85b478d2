//! Errors: the library's status code and message, as a Rust value.

use std::ffi::{CStr, CString};
use std::fmt;

use crate::sys;

/// The status of a failed call: the header's `AG_ERR_*` codes, one variant each.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Status {
    /// `AG_ERR_INVALID_HANDLE`: a zero, freed, made-up or wrong-kind handle.
    InvalidHandle,
    /// `AG_ERR_ARGUMENT`: a bad count, axis, rank, flag or pointer.
    Argument,
    /// `AG_ERR_SHAPE`: shapes that do not fit together.
    Shape,
    /// `AG_ERR_DTYPE`: an unknown dtype, or operands of different dtypes.
    DType,
    /// `AG_ERR_STATE`: misuse of the graph (backward twice, no seed for a non-scalar, ...).
    State,
    /// `AG_ERR_OUT_OF_MEMORY`: an allocation that could not be satisfied.
    OutOfMemory,
    /// `AG_ERR_CALLBACK`: a callback (a hook, a custom op's closure) failed or panicked.
    Callback,
    /// `AG_ERR_INTERNAL`: a bug in Autograd.
    Internal,
    /// `AG_ERR_IO`: a file that cannot be opened, read or written.
    Io,
    /// `AG_ERR_FORMAT`: a file or buffer that is not what it claims to be.
    Format,
    /// A code this crate does not know (a newer library).
    Unknown(i32),
}

impl Status {
    /// The status for a C status code; `None` for `AG_OK`.
    pub fn from_code(code: sys::ag_status) -> Option<Status> {
        Some(match code {
            sys::AG_OK => return None,
            sys::AG_ERR_INVALID_HANDLE => Status::InvalidHandle,
            sys::AG_ERR_ARGUMENT => Status::Argument,
            sys::AG_ERR_SHAPE => Status::Shape,
            sys::AG_ERR_DTYPE => Status::DType,
            sys::AG_ERR_STATE => Status::State,
            sys::AG_ERR_OUT_OF_MEMORY => Status::OutOfMemory,
            sys::AG_ERR_CALLBACK => Status::Callback,
            sys::AG_ERR_INTERNAL => Status::Internal,
            sys::AG_ERR_IO => Status::Io,
            sys::AG_ERR_FORMAT => Status::Format,
            other => Status::Unknown(other),
        })
    }

    /// The C status code (`sys::AG_ERR_SHAPE`, ...).
    pub fn code(self) -> sys::ag_status {
        match self {
            Status::InvalidHandle => sys::AG_ERR_INVALID_HANDLE,
            Status::Argument => sys::AG_ERR_ARGUMENT,
            Status::Shape => sys::AG_ERR_SHAPE,
            Status::DType => sys::AG_ERR_DTYPE,
            Status::State => sys::AG_ERR_STATE,
            Status::OutOfMemory => sys::AG_ERR_OUT_OF_MEMORY,
            Status::Callback => sys::AG_ERR_CALLBACK,
            Status::Internal => sys::AG_ERR_INTERNAL,
            Status::Io => sys::AG_ERR_IO,
            Status::Format => sys::AG_ERR_FORMAT,
            Status::Unknown(code) => code,
        }
    }

    /// The constant's name, as `ag_status_name` gives it ("AG_ERR_SHAPE").
    pub fn name(self) -> &'static str {
        match self {
            Status::InvalidHandle => "AG_ERR_INVALID_HANDLE",
            Status::Argument => "AG_ERR_ARGUMENT",
            Status::Shape => "AG_ERR_SHAPE",
            Status::DType => "AG_ERR_DTYPE",
            Status::State => "AG_ERR_STATE",
            Status::OutOfMemory => "AG_ERR_OUT_OF_MEMORY",
            Status::Callback => "AG_ERR_CALLBACK",
            Status::Internal => "AG_ERR_INTERNAL",
            Status::Io => "AG_ERR_IO",
            Status::Format => "AG_ERR_FORMAT",
            Status::Unknown(_) => "AG_UNKNOWN_STATUS",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A failed call: its status and the library's message (`ag_last_error()` right after the
/// call, read on the same thread), e.g. `AG_ERR_SHAPE` and "ag_matmul: inner extents differ:
/// [2, 3] @ [2, 3]". Displayed as "AG_ERR_SHAPE: ag_matmul: ...".
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error {
    /// What kind of failure.
    pub status: Status,
    /// The library's message (or this crate's, for a check made before calling the library).
    pub message: String,
}

/// The result of every fallible call of this crate.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// An error made without the library: for this crate's own checks, and for callbacks (a
    /// hook, a custom op) that fail for a reason of their own; the call that ran such a callback
    /// fails with `Status::Callback` and a message quoting this one.
    pub fn new(status: Status, message: impl Into<String>) -> Error {
        Error { status, message: message.into() }
    }

    /// The error of a call that returned `code` (not `AG_OK`): the library's message on this
    /// thread.
    pub(crate) fn from_last(code: sys::ag_status) -> Error {
        // SAFETY: ag_last_error takes no argument and returns a NUL-terminated string of static
        // storage (per thread), valid until the next failing call on this thread; it is copied
        // out at once, before anything else calls the library.
        let message = unsafe { c_str(sys::ag_last_error()) };
        Error { status: Status::from_code(code).unwrap_or(Status::Unknown(code)), message }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.status.name(), self.message)
    }
}

impl std::error::Error for Error {}

/// `Ok(())` for `AG_OK`, else the error with the library's message.
pub(crate) fn check(code: sys::ag_status) -> Result<()> {
    if code == sys::AG_OK {
        Ok(())
    } else {
        Err(Error::from_last(code))
    }
}

/// Panics with the library's message when a call that cannot fail on a live handle failed
/// anyway (a bug of the library or of this crate): used by infallible accessors.
#[track_caller]
pub(crate) fn expect_ok(code: sys::ag_status, what: &str) {
    if let Err(e) = check(code) {
        panic!("autograd: {what} failed on a live tensor: {e}");
    }
}

/// Sets this thread's `ag_last_error()` (for callbacks; NUL characters become spaces).
pub(crate) fn set_last_error(message: &str) {
    let c = CString::new(message.replace('\0', " ")).unwrap_or_default();
    // SAFETY: `c` is a NUL-terminated string that lives across the call; the library copies it.
    unsafe {
        sys::ag_set_error(c.as_ptr());
    }
}

/// Copies a C string the library owns into a String (lossily for invalid UTF-8).
///
/// # Safety
/// `p` is NULL or points to a NUL-terminated string valid for the duration of the call.
pub(crate) unsafe fn c_str(p: *const sys::c_char) -> String {
    if p.is_null() {
        return String::new();
    }
    // SAFETY: the caller guarantees p is a live NUL-terminated string.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}
