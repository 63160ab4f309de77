//! The file-system server: holds the initramfs as a RAM file system (plus `/dev`, `/tmp` and
//! the `/proc` placeholders, a `/dev/vd*` node for each disk a driver serves, and `/dev/hvc0`
//! when a console port driver serves one) and serves it by PPC as `fs`
//! ([`k42_guest_lib::fs::server`] has the protocol and the logic; this program only maps the
//! archive, fills the file system and moves calls).
//! Started by init; it prints `fsd: ready (N entries)` just before it exports itself.
//!
//! The file windows it hands out are kernel memory objects it creates, maps at
//! [`WINDOWS`] and grants to the client ([`KernelMemory`]).
#![no_std]
#![no_main]

extern crate alloc;

use k42_guest_lib::filewindow::{AddressRanges, Window, PAGE};
use k42_guest_lib::fs::server::{
    FileServer, SharedMemory, BUFFER_SIZE, SERVER_NAME, WAKE_SOFT_INTERRUPT,
};
use k42_guest_lib::fs::{populate_from_cpio, Ctx, FileSystem, FileType, ROOT_INO};
use k42_linux_abi::block::{virtio_disk_name, VIRTIO_BLK_MAJOR, VIRTIO_BLK_MINORS};
use k42_rt::kabi;
use k42_rt::sys::{self, PpcReply};
use spin::{Mutex, Once};

k42_rt::entry!(main);

/// Where this server maps the initramfs archive.
const ARCHIVE_AT: u64 = 0x0000_3000_0000_0000;

/// Where this server maps the file windows it hands out.
const WINDOWS: core::ops::Range<u64> = 0x0000_4000_0000_0000..0x0000_4100_0000_0000;

static SERVER: Once<Mutex<FileServer>> = Once::new();

/// File windows made of kernel memory objects.
struct KernelMemory {
    ranges: AddressRanges,
}

impl SharedMemory for KernelMemory {
    fn create(&mut self, pages: u64) -> Option<(u64, Window)> {
        let at = self.ranges.alloc(pages.checked_mul(PAGE)?)?;
        let made = sys::memobj_create(pages).and_then(|id| {
            sys::memobj_map(id, at, kabi::Prot::READ | kabi::Prot::WRITE).map(|()| id)
        });
        match made {
            // SAFETY: the object's `pages` pages were just mapped read-write at `at`, in an
            // area nothing else here uses; they stay mapped until `release` unmaps them,
            // which takes the window.
            Ok(id) => Some((id, unsafe { Window::new(at, pages) })),
            Err(_) => {
                self.ranges.free(at);
                None
            }
        }
    }

    fn grant(&mut self, id: u64, pid: u64) -> bool {
        sys::memobj_grant(id, pid).is_ok()
    }

    fn release(&mut self, _id: u64, window: Window) {
        let at = window.base();
        if sys::memobj_unmap(at).is_ok() {
            self.ranges.free(at);
        }
    }

    fn alive(&mut self, pid: u64) -> bool {
        // The wake bit is harmless to a client: it re-checks why it waits.
        sys::soft_interrupt(pid, 0, WAKE_SOFT_INTERRUPT) != Err(kabi::Error::NotFound)
    }

    fn pause(&mut self) {
        sys::yield_now();
    }
}

extern "C" fn serve(client: u64, op: u64, a1: u64, a2: u64, a3: u64, cpu: u64) -> PpcReply {
    let Some(server) = SERVER.get() else {
        return PpcReply { r0: 0, r1: 5 };
    };
    // SAFETY: during a PPC call the caller's buffer page is mapped read-write at this CPU's
    // window, and only this call uses it.
    let buf = unsafe {
        core::slice::from_raw_parts_mut(kabi::ppc_window(cpu as usize) as *mut u8, BUFFER_SIZE)
    };
    let (reply, wake) = {
        let mut server = server.lock();
        let reply = server.call(client, [op, a1, a2, a3], buf, sys::unix_time_ns() as i64);
        (reply, server.take_wakeups())
    };
    for pid in wake {
        // A client that has gone meanwhile is no error of ours.
        let _ = sys::soft_interrupt(pid, 0, WAKE_SOFT_INTERRUPT);
    }
    PpcReply {
        r0: reply.value,
        r1: reply.errno as u64,
    }
}

fn build() -> Result<FileSystem, &'static str> {
    let archive = sys::map_initrd(ARCHIVE_AT).map_err(|_| "cannot map the initramfs")?;
    let now = sys::unix_time_ns() as i64;
    let mut fs = FileSystem::new(Ctx::root(now));
    populate_from_cpio(&mut fs, archive).map_err(|_| "the initramfs does not unpack")?;
    let ctx = Ctx::root(now);
    for dir in [&b"/dev"[..], b"/tmp"] {
        match fs.mkdir(ROOT_INO, dir, 0o755, ctx) {
            Ok(_) | Err(k42_guest_lib::fs::FsError::Exists) => {}
            Err(_) => return Err("cannot make /dev or /tmp"),
        }
    }
    let tmp = fs.lookup(ROOT_INO, b"/tmp", true).map_err(|_| "no /tmp")?;
    fs.chmod(tmp, 0o1777, ctx).map_err(|_| "chmod /tmp")?;
    let proc_dir = match fs.mkdir(ROOT_INO, b"/proc", 0o555, ctx) {
        Ok(ino) => ino,
        Err(_) => return Err("cannot make /proc"),
    };
    for name in k42_programs::PROC_FILES {
        // Empty placeholders: the Linux personality fills what a program reads.
        if fs
            .create(proc_dir, name.as_bytes(), 0o444, true, ctx)
            .is_err()
        {
            return Err("cannot make the /proc files");
        }
    }
    let self_dir = fs
        .mkdir(proc_dir, b"self", 0o555, ctx)
        .map_err(|_| "cannot make /proc/self")?;
    for name in k42_programs::PROC_SELF_FILES {
        if fs
            .create(self_dir, name.as_bytes(), 0o444, true, ctx)
            .is_err()
        {
            return Err("cannot make the /proc/self files");
        }
    }
    for (name, major, minor) in [
        (&b"/dev/null"[..], 1, 3),
        (b"/dev/zero", 1, 5),
        (b"/dev/full", 1, 7),
        (b"/dev/random", 1, 8),
        (b"/dev/urandom", 1, 9),
        (b"/dev/tty", 5, 0),
        (b"/dev/console", 5, 1),
    ] {
        // The archive may bring its own.
        let kind = FileType::CharDevice;
        let _ = fs.mknod_device(ROOT_INO, name, kind, 0o666, (major, minor), ctx);
    }
    // Disk n, served by `blkd` as `blk<n>` (started before this server), is /dev/vd<a + n>:
    // Linux programs read and write it through that driver, not through this server.
    for n in 0..kabi::MAX_DEVICES {
        let served = sys::ppc_lookup(&alloc::format!("blk{n}")).is_ok();
        if let (true, Some(name)) = (served, virtio_disk_name(n)) {
            let path = [&b"/dev/"[..], &name].concat();
            let numbers = (VIRTIO_BLK_MAJOR, n as u32 * VIRTIO_BLK_MINORS);
            let kind = FileType::BlockDevice;
            let _ = fs.mknod_device(ROOT_INO, &path, kind, 0o660, numbers, ctx);
        }
    }
    // A second console, served by `hvcd` as `hvc0`, is /dev/hvc0 (Linux's name and numbers).
    if sys::ppc_lookup("hvc0").is_ok() {
        let kind = FileType::CharDevice;
        let numbers = (k42_linux_abi::tty::HVC_MAJOR, 0);
        let _ = fs.mknod_device(ROOT_INO, b"/dev/hvc0", kind, 0o620, numbers, ctx);
    }
    Ok(fs)
}

fn main(_arg: u64) -> i64 {
    let fs = match build() {
        Ok(fs) => fs,
        Err(why) => {
            k42_rt::println!("fsd: {why}");
            return 1;
        }
    };
    let entries = fs.inode_count();
    let memory = KernelMemory {
        ranges: AddressRanges::new(WINDOWS),
    };
    SERVER
        .call_once(|| Mutex::new(FileServer::new(fs).with_memory(alloc::boxed::Box::new(memory))));
    // Printed before the export: whoever waits for the server (init) starts its clients once
    // the name is exported, and their output must come after this line, not inside it.
    k42_rt::println!("fsd: ready ({entries} entries)");
    if let Err(e) = sys::ppc_serve(SERVER_NAME, serve) {
        k42_rt::println!("fsd: cannot export {SERVER_NAME}: {e:?}");
        return 1;
    }
    loop {
        sys::block(0);
    }
}
