//! Virtio for ring-3 drivers: the devices the kernel announces (`virtio_mmio.device=` words),
//! the virtio-mmio (version 2, "modern") transport, a split virtqueue, the virtio-blk request
//! protocol, a page-sized block cache, and the virtio-net, virtio-rng and virtio-console drivers. All safe code over two small traits, [`Regs`] (the
//! device's register window) and [`Dma`] (memory the device reads and writes), so the whole
//! driver is tested on the host against a model device; a program implements the traits with
//! the few volatile accesses that need `unsafe`.

pub mod blk;
pub mod cache;
pub mod console;
pub mod net;
pub mod queue;
pub mod rng;
#[cfg(test)]
mod testing;
pub mod transport;

pub use queue::{Dma, SplitQueue};
pub use transport::{Regs, Transport, TransportError};

/// A device as announced on the kernel command line: `virtio_mmio.device=<size>@<base>:<irq>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MmioDevice {
    /// Guest-physical base of the register window.
    pub base: u64,
    /// Window size in bytes.
    pub size: u64,
    /// Interrupt line (GSI).
    pub irq: u32,
}

/// The command-line key announcing a device.
pub const CMDLINE_KEY: &str = "virtio_mmio.device";

fn number(text: &str) -> Option<u64> {
    match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}

/// Parses the value of a `virtio_mmio.device=` word (`<size>@<base>:<irq>`, size with an
/// optional K, M or G suffix, numbers decimal or `0x` hex, as Linux reads them).
pub fn parse_device(value: &str) -> Option<MmioDevice> {
    let (size, rest) = value.split_once('@')?;
    let (base, irq) = rest.split_once(':')?;
    let (digits, shift) = match size.as_bytes().last()? {
        b'K' | b'k' => (&size[..size.len() - 1], 10),
        b'M' | b'm' => (&size[..size.len() - 1], 20),
        b'G' | b'g' => (&size[..size.len() - 1], 30),
        _ => (size, 0),
    };
    let size = number(digits)?.checked_mul(1 << shift)?;
    Some(MmioDevice {
        base: number(base)?,
        size,
        irq: u32::try_from(number(irq)?).ok()?,
    })
}

/// Every well-formed device announcement in `cmdline`, in order (malformed ones are `Err`
/// with the word, so the caller can say which).
pub fn devices(cmdline: &str) -> impl Iterator<Item = Result<MmioDevice, &str>> {
    cmdline.split_ascii_whitespace().filter_map(|word| {
        let (key, value) = word.split_once('=')?;
        (key == CMDLINE_KEY).then(|| parse_device(value).ok_or(word))
    })
}

/// Virtio device ID of a block device.
pub const DEVICE_ID_BLOCK: u32 = 2;
/// Virtio device ID of a network card.
pub const DEVICE_ID_NET: u32 = 1;
/// Virtio device ID of a console.
pub const DEVICE_ID_CONSOLE: u32 = 3;
/// Virtio device ID of an entropy source.
pub const DEVICE_ID_RNG: u32 = 4;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announcements_parse_the_linux_way() {
        assert_eq!(
            parse_device("4K@0xd0000000:5"),
            Some(MmioDevice {
                base: 0xd000_0000,
                size: 4096,
                irq: 5
            })
        );
        assert_eq!(parse_device("0x200@4096:12").map(|d| d.size), Some(0x200));
        assert_eq!(parse_device("1M@0x1000:7").map(|d| d.size), Some(1 << 20));
        for bad in [
            "",
            "4K",
            "4K@",
            "4K@0xd0000000",
            "@1:2",
            "xK@1:2",
            "4K@1:x",
            "4K@1:99999999999",
        ] {
            assert_eq!(parse_device(bad), None, "{bad}");
        }
        assert_eq!(parse_device("99999999999999999G@1:2"), None);
        let line = "init=/bin/x virtio_mmio.device=4K@0xd0000000:5 quiet \
                    virtio_mmio.device=bad virtio_mmio.device=4K@0xd0001000:6";
        let found: alloc::vec::Vec<_> = devices(line).collect();
        assert_eq!(found.len(), 3);
        assert_eq!(found[1], Err("virtio_mmio.device=bad"));
        assert_eq!(found[2].map(|d| (d.base, d.irq)), Ok((0xd000_1000, 6)));
    }
}
