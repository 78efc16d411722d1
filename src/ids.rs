//! Unguessable identifiers: session ids, and the random passwords and tokens tunnel methods and
//! the page use. A leaf: depends on nothing in the crate.

/// A new session id: 128 bits from the OS CSPRNG, as 32 hex digits.
pub fn new_sid() -> String {
    let mut bytes = [0u8; 16];
    let mut filled = 0;
    while filled < bytes.len() {
        // SAFETY: the pointer and length describe the unfilled tail of `bytes`.
        let n = unsafe {
            libc::getrandom(bytes[filled..].as_mut_ptr().cast(), bytes.len() - filled, 0)
        };
        if n > 0 {
            filled += n as usize;
        } else {
            assert_eq!(
                std::io::Error::last_os_error().kind(),
                std::io::ErrorKind::Interrupted,
                "getrandom failed"
            );
        }
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
