//! Page-fault upcalls (K42): a thread that touches a page its pager has yet to supply does not
//! cost its dispatcher the CPU. This process (argument 0) creates a paged memory object and is
//! its pager: it fills a page only some milliseconds after the kernel asks for it. It starts
//! itself in other roles, each mapping the object:
//!
//! - [`UPCALLS`]: one dispatcher with upcalls and three threads. Two fault on one page and
//!   one on another, which it then writes; the third thread keeps running meanwhile. Checks
//!   the contents, that the other thread ran while the first waited and that the kernel
//!   upcalled.
//! - [`BLOCKING`]: no upcalls; its dispatcher blocks in the kernel until the page comes.
//! - [`VICTIM`]: touches a page the pager fails: the kernel ends it with SIGBUS.
//! - [`SUB_PAGER`] and [`ORPHAN`]: a second pager exits while a process waits for its page,
//!   which is then ended with SIGBUS instead of waiting for ever.
//!
//! The pager checks that each page was asked for once, what the writer wrote, the exit
//! statuses, and the system call's bad-argument errors. Exits 0 if all hold.
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use k42_guest_lib::uthread::k42::K42Platform;
use k42_guest_lib::uthread::{Builder, Runtime};
use k42_rt::kabi::{self, Message, Prot};
use k42_rt::println;
use k42_rt::sys;
use spin::Once;

k42_rt::entry!(main);

/// Roles (the low bits of the spawn argument; the sub-pager finds its parent's pid above).
const ROLE_BITS: u64 = 8;
const UPCALLS: u64 = 1;
const BLOCKING: u64 = 2;
const VICTIM: u64 = 3;
const SUB_PAGER: u64 = 4;
const ORPHAN: u64 = 5;

/// Pages of the object.
const PAGES: u64 = 8;
/// Where the object is mapped, in the pager and in the clients.
const OBJECT_AT: u64 = 0x0000_3000_0000_0000;
/// How long the pager takes to supply a page: several scheduler turns.
const FILL_DELAY_NS: u64 = 30_000_000;
/// Pages of the roles: read by two threads of the upcall client; written by it; read by the
/// blocking client; failed by the pager (the victim's).
const SHARED_PAGE: u64 = 0;
const WRITTEN_PAGE: u64 = 1;
const BLOCKING_PAGE: u64 = 2;
const FAILED_PAGE: u64 = 3;
/// What the upcall client writes into [`WRITTEN_PAGE`] (at word 7).
const WRITTEN_VALUE: u64 = 0x5151_7777;
/// Exit status of a process ended by SIGBUS.
const SIGBUS_STATUS: i64 = 128 + 7;

/// `words[0]` of the message that hands a client the object: `words[1]` is its id.
const MESSAGE_OBJECT: u64 = 0x0b1e;
/// `words[0]` of the message that asks the sub-pager to grant its object to `words[1]`.
const MESSAGE_GRANT: u64 = 0x62a7;

/// Word `word` of page `page` as the pager fills it.
fn pattern(page: u64, word: u64) -> u64 {
    0xfee1_0000_0000_0000 | (page << 32) | word
}

/// A pointer to word `word` of page `page` of the object mapped at [`OBJECT_AT`].
fn word_at(page: u64, word: u64) -> *mut u64 {
    (OBJECT_AT + page * kabi::PAGE_SIZE + word * 8) as *mut u64
}

/// Reads word `word` of page `page` (a fault the pager may have to serve).
fn read_word(page: u64, word: u64) -> u64 {
    // SAFETY: the object is mapped at OBJECT_AT for PAGES pages in every role that calls
    // this; a page that is not filled yet faults and is waited for by the kernel's design.
    unsafe { core::ptr::read_volatile(word_at(page, word)) }
}

/// Writes word `word` of page `page`.
fn write_word(page: u64, word: u64, value: u64) {
    // SAFETY: as in `read_word`; the mapping is writable in the roles that call this.
    unsafe { core::ptr::write_volatile(word_at(page, word), value) }
}

/// Waits for a message whose first word is `tag`; returns it.
fn await_message(tag: u64) -> Message {
    loop {
        match sys::receive() {
            Ok(m) if m.words[0] == tag => return m,
            Ok(_) => {}
            Err(_) => {
                sys::block(0);
            }
        }
    }
}

/// Maps the object a [`MESSAGE_OBJECT`] hands this client.
fn map_handed_object(prot: u64) -> Result<u64, kabi::Error> {
    let id = await_message(MESSAGE_OBJECT).words[1];
    sys::memobj_map(id, OBJECT_AT, prot).map(|()| id)
}

/// Starts `role`, lets it map object `id` and hands it the id.
fn start_client(role: u64, id: u64) -> Result<u64, kabi::Error> {
    let pid = sys::spawn("/bin/pager", role, 0)?;
    sys::memobj_grant(id, pid)?;
    sys::send(pid, [MESSAGE_OBJECT, id, 0])?;
    Ok(pid)
}

/// The pager's state: when each requested page is due, how often each was asked for.
struct Pager {
    id: u64,
    due: [Option<u64>; PAGES as usize],
    requests: [u64; PAGES as usize],
}

impl Pager {
    /// Takes the kernel's page requests and fills (or fails) what is due, until child `pid`
    /// exits; returns its status.
    fn serve_until_exit(&mut self, pid: u64) -> Result<i64, kabi::Error> {
        loop {
            while let Ok(m) = sys::receive() {
                let [tag, id, page] = m.words;
                if m.sender == 0 && tag == kabi::MESSAGE_PAGE_REQUEST && id == self.id {
                    let page = page.min(PAGES - 1);
                    self.requests[page as usize] += 1;
                    self.due[page as usize] = Some(sys::now_ns() + FILL_DELAY_NS);
                }
            }
            let now = sys::now_ns();
            for page in 0..PAGES {
                let slot = &mut self.due[page as usize];
                if slot.is_some_and(|due| due <= now) {
                    *slot = None;
                    self.supply(page)?;
                }
            }
            match sys::wait_no_hang(pid) {
                Ok((_, status)) => return Ok(status),
                Err(kabi::Error::Again) => {}
                Err(e) => return Err(e),
            }
            sys::block(now + 2_000_000);
        }
    }

    /// Writes page `page`'s contents through the pager's own mapping and tells the kernel,
    /// or fails it.
    fn supply(&self, page: u64) -> Result<(), kabi::Error> {
        if page == FAILED_PAGE {
            return sys::memobj_fail(self.id, page, 1);
        }
        for word in 0..kabi::PAGE_SIZE / 8 {
            write_word(page, word, pattern(page, word));
        }
        sys::memobj_fill(self.id, page, 1)
    }
}

/// Bad arguments to the paging calls get errors, never a changed object.
fn bad_arguments(id: u64) -> bool {
    let plain = sys::memobj_create(1);
    let checks = [
        (
            "unknown create flag",
            sys::check_raw(sys::raw(kabi::Sys::MemobjCreate, 1, 0x10, 0, 0).0).map(|_| ()),
            Err(kabi::Error::Invalid),
        ),
        (
            "fill of a plain object",
            plain.and_then(|p| sys::memobj_fill(p, 0, 1)),
            Err(kabi::Error::Invalid),
        ),
        (
            "fill past the end",
            sys::memobj_fill(id, PAGES - 1, 2),
            Err(kabi::Error::Invalid),
        ),
        (
            "fill of no pages",
            sys::memobj_fill(id, 0, 0),
            Err(kabi::Error::Invalid),
        ),
        (
            "fill with a huge count",
            sys::memobj_fill(id, 1, u64::MAX),
            Err(kabi::Error::Invalid),
        ),
        (
            "unknown fill flag",
            sys::check_raw(sys::raw(kabi::Sys::MemobjFill, id, 0, 1, 0x10).0).map(|_| ()),
            Err(kabi::Error::Invalid),
        ),
        (
            "fill of no object",
            sys::memobj_fill(u64::MAX, 0, 1),
            Err(kabi::Error::NotFound),
        ),
    ];
    let mut ok = true;
    for (what, got, want) in checks {
        if got != want {
            println!("pager: FAILED: {what}: {got:?}, expected {want:?}");
            ok = false;
        }
    }
    ok
}

/// The check: the pager of the object, serving each role in turn.
fn pager() -> i64 {
    let id = match sys::memobj_create_paged(PAGES)
        .and_then(|id| sys::memobj_map(id, OBJECT_AT, Prot::READ | Prot::WRITE).map(|()| id))
    {
        Ok(id) => id,
        Err(e) => {
            println!("pager: cannot make the paged object: {e:?}");
            return 1;
        }
    };
    let mut ok = bad_arguments(id);
    let mut pager = Pager {
        id,
        due: [None; PAGES as usize],
        requests: [0; PAGES as usize],
    };
    let mut run = |role: u64, name: &str, want: i64| {
        let status = start_client(role, id).and_then(|pid| pager.serve_until_exit(pid));
        if status != Ok(want) {
            println!("pager: FAILED: the {name} client exited {status:?}, expected {want}");
            return false;
        }
        true
    };
    ok &= run(UPCALLS, "upcall", 0);
    ok &= run(BLOCKING, "blocking", 0);
    ok &= run(VICTIM, "victim", SIGBUS_STATUS);
    let written = read_word(WRITTEN_PAGE, 7);
    if written != WRITTEN_VALUE {
        println!("pager: FAILED: the upcall client's write reads back {written:#x}");
        ok = false;
    }
    let asked = [SHARED_PAGE, WRITTEN_PAGE, BLOCKING_PAGE, FAILED_PAGE];
    for page in 0..PAGES {
        let want = u64::from(asked.contains(&page));
        if pager.requests[page as usize] != want {
            println!(
                "pager: FAILED: page {page} was asked for {} times, expected {want}",
                pager.requests[page as usize]
            );
            ok = false;
        }
    }
    ok &= pager_exit();
    println!(
        "pager: requests per page {:?}; a writer's value read back {written:#x}",
        pager.requests
    );
    if ok {
        println!("pager: all checks passed");
        0
    } else {
        println!("pager: FAILED");
        1
    }
}

/// A second pager exits while a process waits for its page: the waiter is ended, not stuck.
fn pager_exit() -> bool {
    let me = sys::dispatcher_page(0).pid;
    let result = sys::spawn("/bin/pager", SUB_PAGER | me << ROLE_BITS, 0).and_then(|sub| {
        let id = await_message(MESSAGE_OBJECT).words[1];
        let orphan = sys::spawn("/bin/pager", ORPHAN, 0)?;
        sys::send(sub, [MESSAGE_GRANT, orphan, id])?;
        Ok((sys::wait(orphan), sys::wait(sub)))
    });
    if result != Ok((Ok(SIGBUS_STATUS), Ok(0))) {
        println!(
            "pager: FAILED: waiter and exiting pager exited {result:?}, expected ({SIGBUS_STATUS}, 0)"
        );
        return false;
    }
    true
}

/// [`SUB_PAGER`]: makes an object, hands its id to its parent (`parent`), grants it to the
/// process its parent names, and exits as soon as the kernel asks it for a page.
fn sub_pager(parent: u64) -> i64 {
    let made = sys::memobj_create_paged(PAGES).and_then(|id| {
        sys::send(parent, [MESSAGE_OBJECT, id, 0])?;
        let orphan = await_message(MESSAGE_GRANT).words[1];
        sys::memobj_grant(id, orphan)?;
        sys::send(orphan, [MESSAGE_OBJECT, id, 0])?;
        Ok(())
    });
    if made.is_err() {
        println!("pager: sub-pager: {made:?}");
        return 1;
    }
    await_message(kabi::MESSAGE_PAGE_REQUEST);
    0
}

/// The upcall client's thread runtime.
static RUNTIME: Once<Runtime<K42Platform>> = Once::new();
/// Threads of the upcall client.
static WAITER_DONE: AtomicBool = AtomicBool::new(false);
static TURNS_WHILE_WAITING: AtomicU64 = AtomicU64::new(0);
/// Readers of the upcall client waiting for their page.
static READERS_WAITING: AtomicU64 = AtomicU64::new(0);

/// [`UPCALLS`]: three threads on one dispatcher that takes upcalls.
fn upcall_client() -> i64 {
    let id = match map_handed_object(Prot::READ | Prot::WRITE) {
        Ok(id) => id,
        Err(e) => {
            println!("pager: upcall client cannot map: {e:?}");
            return 1;
        }
    };
    // Only the pager may fill.
    let stranger = sys::memobj_fill(id, SHARED_PAGE, 1);
    let rt = RUNTIME.call_once(|| Runtime::new(K42Platform::new(1).with_upcalls()));
    let main = rt.spawn(move || {
        let reader = |word: u64| {
            move || {
                READERS_WAITING.fetch_add(1, Ordering::AcqRel);
                let got = read_word(SHARED_PAGE, word);
                READERS_WAITING.fetch_sub(1, Ordering::AcqRel);
                got == pattern(SHARED_PAGE, word)
            }
        };
        let first = Builder::new().dispatcher(0).spawn(reader(3));
        let second = Builder::new().dispatcher(0).spawn(reader(500));
        let other = Builder::new().dispatcher(0).spawn(|| {
            while !WAITER_DONE.load(Ordering::Acquire) {
                if READERS_WAITING.load(Ordering::Acquire) > 0 {
                    TURNS_WHILE_WAITING.fetch_add(1, Ordering::Relaxed);
                }
                k42_guest_lib::uthread::yield_now();
            }
        });
        let read_ok = first.join() & second.join();
        // A write fault on an unfilled page waits too, then writes to the shared frame.
        write_word(WRITTEN_PAGE, 7, WRITTEN_VALUE);
        let write_ok = read_word(WRITTEN_PAGE, 8) == pattern(WRITTEN_PAGE, 8);
        WAITER_DONE.store(true, Ordering::Release);
        other.join();
        RUNTIME.get().expect("set before the threads").shutdown();
        read_ok && write_ok
    });
    rt.run_dispatcher(0);
    let ok = main.try_join().is_ok_and(|ok| ok);
    let counts = K42Platform::upcall_counts();
    let turns = TURNS_WHILE_WAITING.load(Ordering::Relaxed);
    println!(
        "pager: upcall client: {} page-fault upcalls, the other thread ran {turns} turns while a reader waited; a stranger's fill: {stranger:?}",
        counts.page_faults
    );
    if ok && counts.page_faults >= 2 && turns > 0 && stranger == Err(kabi::Error::NotPermitted) {
        0
    } else {
        println!("pager: FAILED: upcall client");
        1
    }
}

/// [`BLOCKING`]: no upcalls, so the kernel blocks the dispatcher until the page comes.
fn blocking_client() -> i64 {
    if let Err(e) = map_handed_object(Prot::READ) {
        println!("pager: blocking client cannot map: {e:?}");
        return 1;
    }
    let start = sys::now_ns();
    let got = read_word(BLOCKING_PAGE, 9);
    let waited_ms = (sys::now_ns() - start) / 1_000_000;
    println!("pager: blocking client waited {waited_ms} ms for its page");
    if got == pattern(BLOCKING_PAGE, 9) && waited_ms * 1_000_000 >= FILL_DELAY_NS / 2 {
        0
    } else {
        println!("pager: FAILED: blocking client read {got:#x} after {waited_ms} ms");
        1
    }
}

/// [`VICTIM`] and [`ORPHAN`]: touch a page that never comes (the process is ended).
fn victim(page: u64) -> i64 {
    if let Err(e) = map_handed_object(Prot::READ) {
        println!("pager: victim cannot map: {e:?}");
        return 1;
    }
    let got = read_word(page, 0);
    println!("pager: FAILED: victim read {got:#x} from a page that cannot be supplied");
    1
}

fn main(arg: u64) -> i64 {
    match arg & ((1 << ROLE_BITS) - 1) {
        UPCALLS => upcall_client(),
        BLOCKING => blocking_client(),
        VICTIM => victim(FAILED_PAGE),
        SUB_PAGER => sub_pager(arg >> ROLE_BITS),
        ORPHAN => victim(0),
        _ => pager(),
    }
}
