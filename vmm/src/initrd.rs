//! The initramfs as k42vm hands it to the guest. A gzip-compressed image is unpacked here, on
//! the host, before it is loaded: unpacking is bulk work, which DESIGN.md keeps out of the
//! guest's ring 0 (on kvm_pvm every ring-0 instruction is emulated), so the guest kernel always
//! finds its programs in a plain cpio archive. Concatenated gzip members are unpacked one after
//! the other, as Linux accepts them; anything else is loaded as it is.

use std::borrow::Cow;
use std::io::Read;

use flate2::read::MultiGzDecoder;

use crate::error::{Result, VmmError};

/// The two bytes every gzip member starts with (RFC 1952).
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Whether `image` starts like a gzip member.
pub fn is_gzip(image: &[u8]) -> bool {
    image.starts_with(&GZIP_MAGIC)
}

/// The bytes to load for the initrd `name`: `image` unpacked when it is gzip-compressed (at
/// most `limit` bytes, the guest's memory), else `image` unchanged.
pub fn unpack<'a>(image: Cow<'a, [u8]>, name: &str, limit: u64) -> Result<Cow<'a, [u8]>> {
    if !is_gzip(&image) {
        return Ok(image);
    }
    let mut unpacked = Vec::new();
    MultiGzDecoder::new(&image[..])
        .take(limit.saturating_add(1))
        .read_to_end(&mut unpacked)
        .map_err(|e| VmmError::BadInitrd {
            name: name.to_string(),
            reason: e.to_string(),
        })?;
    if unpacked.len() as u64 > limit {
        return Err(VmmError::MemoryTooSmall(format!(
            "the initrd {name} unpacks to more than the guest's {} MiB of memory; raise --memory",
            limit >> 20
        )));
    }
    Ok(Cow::Owned(unpacked))
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::write::GzEncoder;
    use flate2::Compression;
    use std::io::Write;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap()
    }

    #[test]
    fn plain_archives_pass_through_untouched() {
        let plain = b"070701 and the rest of a cpio archive".to_vec();
        let out = unpack(Cow::Borrowed(&plain), "plain", 1 << 20).unwrap();
        assert!(matches!(out, Cow::Borrowed(_)), "no copy is made");
        assert_eq!(&out[..], &plain[..]);
    }

    #[test]
    fn gzip_members_are_unpacked_in_order() {
        let mut image = gzip(b"first member, ");
        image.extend(gzip(b"second member"));
        let out = unpack(Cow::Owned(image), "two.gz", 1 << 20).unwrap();
        assert_eq!(&out[..], b"first member, second member");
    }

    #[test]
    fn damaged_gzip_is_a_clear_error() {
        let mut image = gzip(&[0x55; 10_000]);
        let middle = image.len() / 2;
        image[middle] ^= 0xff;
        image.truncate(image.len() - 4);
        let err = unpack(Cow::Owned(image), "broken.gz", 1 << 20).unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with("the initrd broken.gz is gzip-compressed but cannot be unpacked"),
            "{text}"
        );
    }

    #[test]
    fn unpacking_past_guest_memory_is_refused() {
        let image = gzip(&vec![0u8; 3 << 20]);
        let err = unpack(Cow::Owned(image.clone()), "big.gz", 2 << 20).unwrap_err();
        assert!(matches!(err, VmmError::MemoryTooSmall(_)), "{err}");
        assert!(err.to_string().contains("raise --memory"), "{err}");
        assert_eq!(
            unpack(Cow::Owned(image), "big.gz", 3 << 20).unwrap().len(),
            3 << 20,
            "exactly the limit fits"
        );
    }
}
