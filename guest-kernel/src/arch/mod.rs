//! Architecture-specific code; x86_64 now, ppc64 later.

mod x86_64;

pub use self::x86_64::*;
