//! Terminals: the kernel's `struct termios` of `TCGETS` (not the C library's, which is larger),
//! `struct winsize`, the terminal and file `ioctl` numbers, and the termios flag bits.
//!
//! x86_64 uses the generic `include/uapi/asm-generic/termbits.h` and `ioctls.h`.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Get the termios.
pub const TCGETS: u32 = 0x5401;
/// Set the termios now.
pub const TCSETS: u32 = 0x5402;
/// Set the termios after output drains.
pub const TCSETSW: u32 = 0x5403;
/// Set the termios after output drains, discarding pending input.
pub const TCSETSF: u32 = 0x5404;
/// Send a break or drain output (`tcdrain`).
pub const TCSBRK: u32 = 0x5409;
/// Start or stop output.
pub const TCXONC: u32 = 0x540a;
/// Discard pending input and/or output.
pub const TCFLSH: u32 = 0x540b;
/// Make the terminal the controlling terminal.
pub const TIOCSCTTY: u32 = 0x540e;
/// Get the foreground process group.
pub const TIOCGPGRP: u32 = 0x540f;
/// Set the foreground process group.
pub const TIOCSPGRP: u32 = 0x5410;
/// Bytes in the output queue.
pub const TIOCOUTQ: u32 = 0x5411;
/// Get the window size.
pub const TIOCGWINSZ: u32 = 0x5413;
/// Set the window size.
pub const TIOCSWINSZ: u32 = 0x5414;
/// Bytes ready to read (`TIOCINQ`).
pub const FIONREAD: u32 = 0x541b;
/// Set or clear non-blocking I/O.
pub const FIONBIO: u32 = 0x5421;
/// Give up the controlling terminal.
pub const TIOCNOTTY: u32 = 0x5422;
/// Get the session id of the terminal.
pub const TIOCGSID: u32 = 0x5429;
/// Clear close-on-exec.
pub const FIONCLEX: u32 = 0x5450;
/// Set close-on-exec.
pub const FIOCLEX: u32 = 0x5451;
/// Set or clear asynchronous I/O.
pub const FIOASYNC: u32 = 0x5452;
/// Get the pty number.
pub const TIOCGPTN: u32 = 0x8004_5430;
/// Lock or unlock a pty.
pub const TIOCSPTLCK: u32 = 0x4004_5431;
/// `TCFLSH`: discard input.
pub const TCIFLUSH: u32 = 0;
/// `TCFLSH`: discard output.
pub const TCOFLUSH: u32 = 1;
/// `TCFLSH`: discard both.
pub const TCIOFLUSH: u32 = 2;

/// `c_cc` index: interrupt character (`SIGINT`).
pub const VINTR: usize = 0;
/// `c_cc` index: quit character (`SIGQUIT`).
pub const VQUIT: usize = 1;
/// `c_cc` index: erase character.
pub const VERASE: usize = 2;
/// `c_cc` index: kill-line character.
pub const VKILL: usize = 3;
/// `c_cc` index: end-of-file character.
pub const VEOF: usize = 4;
/// `c_cc` index: non-canonical read timeout, in tenths of a second.
pub const VTIME: usize = 5;
/// `c_cc` index: non-canonical read minimum.
pub const VMIN: usize = 6;
/// `c_cc` index: switch character (unused).
pub const VSWTC: usize = 7;
/// `c_cc` index: start-output character.
pub const VSTART: usize = 8;
/// `c_cc` index: stop-output character.
pub const VSTOP: usize = 9;
/// `c_cc` index: suspend character (`SIGTSTP`).
pub const VSUSP: usize = 10;
/// `c_cc` index: extra end-of-line character.
pub const VEOL: usize = 11;
/// `c_cc` index: reprint character.
pub const VREPRINT: usize = 12;
/// `c_cc` index: discard-output character.
pub const VDISCARD: usize = 13;
/// `c_cc` index: word-erase character.
pub const VWERASE: usize = 14;
/// `c_cc` index: literal-next character.
pub const VLNEXT: usize = 15;
/// `c_cc` index: second extra end-of-line character.
pub const VEOL2: usize = 16;
/// Number of control characters in the kernel's termios.
pub const NCCS: usize = 19;

/// `c_iflag`: ignore breaks.
pub const IGNBRK: u32 = 0o1;
/// `c_iflag`: a break sends `SIGINT`.
pub const BRKINT: u32 = 0o2;
/// `c_iflag`: ignore parity errors.
pub const IGNPAR: u32 = 0o4;
/// `c_iflag`: mark parity errors.
pub const PARMRK: u32 = 0o10;
/// `c_iflag`: check parity.
pub const INPCK: u32 = 0o20;
/// `c_iflag`: strip the eighth bit.
pub const ISTRIP: u32 = 0o40;
/// `c_iflag`: NL to CR on input.
pub const INLCR: u32 = 0o100;
/// `c_iflag`: ignore CR.
pub const IGNCR: u32 = 0o200;
/// `c_iflag`: CR to NL on input.
pub const ICRNL: u32 = 0o400;
/// `c_iflag`: XON/XOFF output flow control.
pub const IXON: u32 = 0o2000;
/// `c_iflag`: any character restarts output.
pub const IXANY: u32 = 0o4000;
/// `c_iflag`: XON/XOFF input flow control.
pub const IXOFF: u32 = 0o10000;
/// `c_iflag`: ring the bell when the input queue is full.
pub const IMAXBEL: u32 = 0o20000;
/// `c_iflag`: input is UTF-8 (erase deletes whole characters).
pub const IUTF8: u32 = 0o40000;
/// `c_oflag`: post-process output.
pub const OPOST: u32 = 0o1;
/// `c_oflag`: NL to CR NL on output.
pub const ONLCR: u32 = 0o4;
/// `c_oflag`: CR to NL on output.
pub const OCRNL: u32 = 0o10;
/// `c_cflag`: mask of the baud rate.
pub const CBAUD: u32 = 0o10017;
/// `c_cflag`: 38400 baud.
pub const B38400: u32 = 0o17;
/// `c_cflag`: mask of the character size.
pub const CSIZE: u32 = 0o60;
/// `c_cflag`: 8-bit characters.
pub const CS8: u32 = 0o60;
/// `c_cflag`: two stop bits.
pub const CSTOPB: u32 = 0o100;
/// `c_cflag`: enable the receiver.
pub const CREAD: u32 = 0o200;
/// `c_cflag`: parity.
pub const PARENB: u32 = 0o400;
/// `c_cflag`: hang up on last close.
pub const HUPCL: u32 = 0o2000;
/// `c_cflag`: ignore modem control lines.
pub const CLOCAL: u32 = 0o4000;
/// `c_lflag`: INTR, QUIT and SUSP send signals.
pub const ISIG: u32 = 0o1;
/// `c_lflag`: canonical (line) mode.
pub const ICANON: u32 = 0o2;
/// `c_lflag`: echo input.
pub const ECHO: u32 = 0o10;
/// `c_lflag`: ERASE erases visibly.
pub const ECHOE: u32 = 0o20;
/// `c_lflag`: KILL erases the line visibly.
pub const ECHOK: u32 = 0o40;
/// `c_lflag`: echo NL even without `ECHO`.
pub const ECHONL: u32 = 0o100;
/// `c_lflag`: no flush after an interrupt.
pub const NOFLSH: u32 = 0o200;
/// `c_lflag`: background writes send `SIGTTOU`.
pub const TOSTOP: u32 = 0o400;
/// `c_lflag`: echo control characters as `^X`.
pub const ECHOCTL: u32 = 0o1000;
/// `c_lflag`: KILL erases each character of the line.
pub const ECHOKE: u32 = 0o4000;
/// `c_lflag`: extended input processing (`LNEXT`, `WERASE`, ...).
pub const IEXTEN: u32 = 0o100000;

/// The kernel's `struct termios` (36 bytes): what `TCGETS` writes and `TCSETS*` read.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct Termios {
    /// Input modes.
    pub c_iflag: u32,
    /// Output modes.
    pub c_oflag: u32,
    /// Control modes.
    pub c_cflag: u32,
    /// Local modes.
    pub c_lflag: u32,
    /// Line discipline (0: N_TTY).
    pub c_line: u8,
    /// Control characters, indexed by `V*`.
    pub c_cc: [u8; NCCS],
}

impl Termios {
    /// The settings a Linux terminal starts with (`tty_std_termios`): canonical mode, echo,
    /// signals, CR-to-NL in, NL-to-CRNL out, `^C ^\ DEL ^U ^D` and friends.
    pub fn linux_default() -> Self {
        let mut c_cc = [0; NCCS];
        for (i, c) in [
            (VINTR, 0x03),
            (VQUIT, 0x1c),
            (VERASE, 0x7f),
            (VKILL, 0x15),
            (VEOF, 0x04),
            (VMIN, 1),
            (VSTART, 0x11),
            (VSTOP, 0x13),
            (VSUSP, 0x1a),
            (VREPRINT, 0x12),
            (VDISCARD, 0x0f),
            (VWERASE, 0x17),
            (VLNEXT, 0x16),
        ] {
            c_cc[i] = c;
        }
        Termios {
            c_iflag: ICRNL | IXON,
            c_oflag: OPOST | ONLCR,
            c_cflag: B38400 | CS8 | CREAD | HUPCL,
            c_lflag: ISIG | ICANON | ECHO | ECHOE | ECHOK | ECHOCTL | ECHOKE | IEXTEN,
            c_line: 0,
            c_cc,
        }
    }

    /// A terminal whose lines are edited and echoed before they arrive (by the host's terminal,
    /// for a console behind k42vm): canonical mode with every echo flag off, so programs
    /// neither echo again nor switch to their own line editing (busybox's line editor steps
    /// aside when it sees `ICANON` without `ECHO`).
    pub fn host_edited() -> Self {
        let mut t = Self::linux_default();
        t.c_lflag &= !(ECHO | ECHOE | ECHOK | ECHOCTL | ECHOKE);
        t
    }
}

/// `struct winsize` of `TIOCGWINSZ` (8 bytes).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct Winsize {
    /// Rows.
    pub ws_row: u16,
    /// Columns.
    pub ws_col: u16,
    /// Width in pixels (unused).
    pub ws_xpixel: u16,
    /// Height in pixels (unused).
    pub ws_ypixel: u16,
}

/// The major number of Linux's hypervisor consoles (`/dev/hvc0`, ...: a virtio-console port).
pub const HVC_MAJOR: u32 = 229;

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{offset_of, size_of};

    #[test]
    fn layout_by_hand() {
        // include/uapi/asm-generic/termbits.h: four tcflag_t (unsigned int), c_line, c_cc[19].
        assert_eq!(size_of::<Termios>(), 36);
        assert_eq!(offset_of!(Termios, c_line), 16);
        assert_eq!(offset_of!(Termios, c_cc), 17);
        assert_eq!(size_of::<Winsize>(), 8);
    }

    #[test]
    fn default_is_a_cooked_terminal() {
        let t = Termios::linux_default();
        assert!(t.c_lflag & ICANON != 0 && t.c_lflag & ECHO != 0 && t.c_lflag & ISIG != 0);
        assert_eq!((t.c_cc[VINTR], t.c_cc[VEOF], t.c_cc[VMIN]), (3, 4, 1));
        assert_eq!(t.c_cflag & CSIZE, CS8);
        let bytes = t.as_bytes();
        assert_eq!(bytes.len(), 36);
        assert_eq!(bytes[17 + VERASE], 0x7f);
    }

    #[test]
    fn host_edited_is_canonical_without_echo() {
        let t = Termios::host_edited();
        assert_eq!(t.c_lflag & (ICANON | ECHO), ICANON);
        assert_eq!(t.c_lflag & (ECHOE | ECHOK | ECHOCTL | ECHOKE), 0);
        assert_eq!(t.c_cc, Termios::linux_default().c_cc);
    }
}
