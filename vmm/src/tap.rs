//! Opening a TAP device for virtio-net: `/dev/net/tun` and the TUNSETIFF ioctl.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;

/// Where Linux's TUN/TAP driver lives.
pub const TUN_PATH: &str = "/dev/net/tun";

/// `struct ifreq` as TUNSETIFF reads it: the name, then the flags (the rest of the union unused).
#[repr(C)]
struct IfReqFlags {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

const _: () = assert!(std::mem::size_of::<IfReqFlags>() == std::mem::size_of::<libc::ifreq>());

/// Opens (creating it if needed) the TAP device `name`, non-blocking, with IFF_TAP | IFF_NO_PI:
/// each read or write is one Ethernet frame. Errors are sentences for the user.
pub fn open_tap(name: &str) -> Result<File, String> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains('\0') {
        return Err(format!(
            "TAP device name `{name}` must be 1 to 15 characters"
        ));
    }
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(TUN_PATH)
        .map_err(|e| {
            let hint = match e.kind() {
                io::ErrorKind::NotFound => "; load the tun driver (modprobe tun)",
                io::ErrorKind::PermissionDenied => "; k42vm needs read and write access to it",
                _ => "",
            };
            format!("cannot open {TUN_PATH} for TAP device {name}: {e}{hint}")
        })?;
    let mut req = IfReqFlags {
        name: [0; libc::IFNAMSIZ],
        flags: (libc::IFF_TAP | libc::IFF_NO_PI) as libc::c_short,
        _pad: [0; 22],
    };
    req.name[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: TUNSETIFF reads and writes a `struct ifreq`; `req` has its size and layout (checked
    // above), lives across the call, and the fd is an open /dev/net/tun.
    let ret = unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &mut req) };
    if ret < 0 {
        let e = io::Error::last_os_error();
        let hint = match e.raw_os_error() {
            Some(libc::EPERM) | Some(libc::EACCES) => format!(
                "; creating a TAP device needs CAP_NET_ADMIN: run k42vm as root, or create it for \
                 your user first (ip tuntap add {name} mode tap user $USER)"
            ),
            Some(libc::EINVAL) => format!(
                "; an interface named {name} may exist that is not a TAP device, or is a TAP \
                 device with other flags (multi-queue or with packet information)"
            ),
            Some(libc::EBUSY) => "; another program is using it".to_string(),
            _ => String::new(),
        };
        return Err(format!(
            "cannot create or attach TAP device {name}: {e}{hint}"
        ));
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_names_are_refused_before_any_syscall() {
        assert!(open_tap("").unwrap_err().contains("1 to 15 characters"));
        assert!(open_tap("abcdefghijklmnop")
            .unwrap_err()
            .contains("1 to 15 characters"));
    }

    #[test]
    fn an_interface_that_is_not_a_tap_is_refused() {
        // `lo` exists in every network namespace and is not a TAP device; without access to
        // /dev/net/tun the open fails first. Either way: an error, with the name in it.
        let err = open_tap("lo").unwrap_err();
        assert!(err.contains("lo"), "{err}");
    }
}
