//! Interfaces by name.

use std::ffi::CString;

/// The index of the interface called `name` in this network namespace, or `None` if there is
/// no such interface.
pub fn index(name: &str) -> Option<u32> {
    let name = CString::new(name).ok()?;
    // SAFETY: `name` is a valid NUL-terminated string that outlives the call; if_nametoindex
    // only reads it.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    (index != 0).then_some(index)
}
