//! Splitting a path into the directory part and its last component.

use super::FsError;
use k42_linux_abi::file::{NAME_MAX, PATH_MAX};

/// Most symlinks followed in one lookup (Linux's `MAXSYMLINKS`); the next one is `ELOOP`.
pub const MAX_SYMLINK_HOPS: u32 = 40;

/// The last component of a path, as the name-creating and -removing calls see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Last<'p> {
    /// A name to look up or create in the parent.
    Normal(&'p [u8]),
    /// `.`
    Dot,
    /// `..`
    DotDot,
    /// The path is `/` (with any number of slashes).
    Root,
}

/// A path cut before its last component.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Split<'p> {
    /// The part to walk to the parent directory: `None` for "the starting directory",
    /// `Some(b"/")` for the root.
    pub(super) dir: Option<&'p [u8]>,
    /// The last component.
    pub(super) last: Last<'p>,
    /// Whether the path ends in `/` (the last component must then be a directory).
    pub(super) trailing_slash: bool,
}

/// Checks what every path must satisfy: not empty, shorter than `PATH_MAX`, no NUL.
pub(super) fn check(path: &[u8]) -> Result<(), FsError> {
    if path.is_empty() {
        Err(FsError::NotFound)
    } else if path.len() >= PATH_MAX {
        Err(FsError::NameTooLong)
    } else if path.contains(&0) {
        Err(FsError::Invalid)
    } else {
        Ok(())
    }
}

/// Checks one component's length.
pub(super) fn check_name(name: &[u8]) -> Result<(), FsError> {
    if name.len() > NAME_MAX {
        Err(FsError::NameTooLong)
    } else {
        Ok(())
    }
}

/// The non-empty components of `path`.
pub(super) fn components(path: &[u8]) -> impl Iterator<Item = &[u8]> {
    path.split(|&b| b == b'/').filter(|c| !c.is_empty())
}

/// Cuts `path` before its last component.
pub(super) fn split_last(path: &[u8]) -> Result<Split<'_>, FsError> {
    check(path)?;
    let trimmed_len = path.iter().rposition(|&b| b != b'/').map_or(0, |i| i + 1);
    let trailing_slash = trimmed_len < path.len();
    let trimmed = &path[..trimmed_len];
    if trimmed.is_empty() {
        return Ok(Split {
            dir: Some(b"/"),
            last: Last::Root,
            trailing_slash,
        });
    }
    let (dir, name) = match trimmed.iter().rposition(|&b| b == b'/') {
        None => (None, trimmed),
        Some(0) => (Some(&path[..1]), &trimmed[1..]),
        Some(i) => (Some(&trimmed[..i]), &trimmed[i + 1..]),
    };
    let last = match name {
        b"." => Last::Dot,
        b".." => Last::DotDot,
        _ => {
            check_name(name)?;
            Last::Normal(name)
        }
    };
    Ok(Split {
        dir,
        last,
        trailing_slash,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;
    use alloc::vec::Vec;

    fn split(p: &str) -> Result<Split<'_>, FsError> {
        split_last(p.as_bytes())
    }

    #[test]
    fn splitting() {
        let s = split("a").unwrap();
        assert_eq!(
            (s.dir, s.last, s.trailing_slash),
            (None, Last::Normal(b"a"), false)
        );
        let s = split("/a").unwrap();
        assert_eq!((s.dir, s.last), (Some(&b"/"[..]), Last::Normal(b"a")));
        let s = split("//a//b///").unwrap();
        assert_eq!(
            (s.dir, s.last, s.trailing_slash),
            (Some(&b"//a/"[..]), Last::Normal(b"b"), true)
        );
        let s = split("a/b").unwrap();
        assert_eq!((s.dir, s.last), (Some(&b"a"[..]), Last::Normal(b"b")));
        assert_eq!(split("///").unwrap().last, Last::Root);
        assert_eq!(split("x/.").unwrap().last, Last::Dot);
        assert_eq!(split("..").unwrap().last, Last::DotDot);
        assert_eq!(split(""), Err(FsError::NotFound));
        assert_eq!(split("a\0b"), Err(FsError::Invalid));
    }

    #[test]
    fn length_limits() {
        let name = "n".repeat(NAME_MAX);
        assert!(split(&name).is_ok());
        assert_eq!(split(&(name.clone() + "n")), Err(FsError::NameTooLong));
        let long: Vec<u8> = vec![b'/'; PATH_MAX - 1];
        assert!(split_last(&long).is_ok());
        assert_eq!(split_last(&vec![b'/'; PATH_MAX]), Err(FsError::NameTooLong));
    }

    #[test]
    fn components_skip_empty_ones() {
        let c: Vec<&[u8]> = components(b"//a/./b//").collect();
        assert_eq!(c, [&b"a"[..], b".", b"b"]);
    }
}
