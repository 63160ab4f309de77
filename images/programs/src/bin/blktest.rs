//! The block-driver check (run by `/bin/drvinit` with two disks: `blk0` writable, `blk1`
//! read-only). On `blk0` it reads the host-prepared blocks 0..16 and prints their checksum,
//! writes a known pattern to blocks 32..48, reads it back from the cache and, after a flush and
//! emptying the cache, from the device; then, from a dispatcher on another CPU, the same blocks
//! must come from the first CPU's part of the cache, with no device request; an out-of-range
//! read must fail. On `blk1` it prints the
//! checksum of blocks 0..4 and a write must be refused as read-only. The host compares the
//! checksums and the image files.
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU64, Ordering};
use k42_guest_lib::virtio::blk::{fnv1a, op, pattern, BlkError, BLOCK_SIZE, FNV_OFFSET};
use k42_programs::devmem::own_ppc_buffer;
use k42_rt::kabi::{DeviceDesc, Error, SpawnFlags};

use k42_rt::println;
use k42_rt::sys;

k42_rt::entry!(main);

/// Blocks the host prepared on each disk (checksummed).
const HOST_BLOCKS: core::ops::Range<u64> = 0..16;
/// Blocks this test writes on `blk0`.
const WRITTEN: core::ops::Range<u64> = 32..48;

/// The `blk0` server, for the dispatcher on another CPU.
static SERVER: AtomicU64 = AtomicU64::new(0);
/// What that dispatcher found: wrong blocks + 1 once it has read them all (0: not yet), or
/// `u64::MAX` after an error.
static OTHER_CPU_WRONG: AtomicU64 = AtomicU64::new(0);
/// The CPU it ran on.
static OTHER_CPU: AtomicU64 = AtomicU64::new(0);

extern "C" fn other_cpu_reader(cpu: u64) -> ! {
    OTHER_CPU.store(cpu, Ordering::Relaxed);
    let result = wrong_blocks(SERVER.load(Ordering::Acquire)).map_or(u64::MAX, |w| w + 1);
    OTHER_CPU_WRONG.store(result, Ordering::Release);
    loop {
        sys::block(0);
    }
}

/// Reads [`WRITTEN`] again from a dispatcher on another CPU: its rep of the disk object finds
/// the blocks in the first CPU's part. False if a block is wrong or went to the device.
fn read_on_another_cpu(server: u64) -> Result<bool, BlkError> {
    let requests = call(server, op::WAITS, 0)? >> 32;
    SERVER.store(server, Ordering::Release);
    match k42_programs::start_workers(other_cpu_reader) {
        Ok(0) => {
            println!("blktest: one CPU: no second CPU's part of the cache to check");
            return Ok(true);
        }
        Ok(_) => {}
        Err(e) => {
            println!("blktest: cannot start a dispatcher on another CPU: {e:?}");
            return Ok(false);
        }
    }
    if !k42_programs::wait_until(100, 10_000, || OTHER_CPU_WRONG.load(Ordering::Acquire) != 0) {
        println!("blktest: the dispatcher on another CPU did not finish");
        return Ok(false);
    }
    let wrong = OTHER_CPU_WRONG.load(Ordering::Acquire).wrapping_sub(1);
    let device = (call(server, op::WAITS, 0)? >> 32) - requests;
    let peer = call(server, op::PEER_HITS, 0)?;
    println!(
        "blktest: blk0 blocks {}..{} read on cpu {}: {wrong} wrong, {device} device requests, \
         {} reads from another CPU's cache part, {} CPUs with a part",
        WRITTEN.start,
        WRITTEN.end,
        OTHER_CPU.load(Ordering::Relaxed),
        peer >> 32,
        peer & 0xffff_ffff
    );
    Ok(wrong == 0 && device == 0 && peer >> 32 >= WRITTEN.end - WRITTEN.start)
}

/// Where this test maps its transfer area.
const AREA_AT: u64 = 0x0000_0040_0000_0000;

/// One call with three arguments to a block server: `Ok(r1)` or the driver's error.
fn call4(server: u64, operation: u64, a1: u64, a2: u64, a3: u64) -> Result<u64, BlkError> {
    match sys::ppc_call(server, [operation, a1, a2, a3]) {
        Ok((0, r1)) => Ok(r1),
        Ok((code, _)) => Err(BlkError::from_code(code).unwrap_or(BlkError::Device)),
        Err(_) => Err(BlkError::NoServer),
    }
}

/// Multi-block requests through a transfer area: the refusals, then blocks `WRITTEN` read
/// four at a time from the device (one device request per call), and a read cut short by the
/// end of the disk.
fn transfer_area(server: u64, blocks: u64) -> Result<bool, BlkError> {
    use op::{ATTACH, READ_BLOCKS};
    let no_area = Err(BlkError::NoTransferArea);
    let mut ok = call4(server, READ_BLOCKS, 32, 1, 0) == no_area;
    ok &= call4(server, ATTACH, 12345, 0, 0) == no_area;
    ok &= call4(server, ATTACH, 12345, op::MAX_TRANSFER_PAGES + 1, 0) == no_area;
    let object = sys::memobj_create(4).map_err(|_| BlkError::Setup)?;
    // Not granted to the driver yet.
    ok &= call4(server, ATTACH, object, 4, 0) == no_area;
    sys::memobj_map(
        object,
        AREA_AT,
        k42_rt::kabi::Prot::READ | k42_rt::kabi::Prot::WRITE,
    )
    .and_then(|()| sys::memobj_grant(object, server))
    .map_err(|_| BlkError::Setup)?;
    ok &= call4(server, ATTACH, object, 4, 0) == Ok(0);
    // More blocks than the area holds; pages past its last one.
    ok &= call4(server, READ_BLOCKS, 32, 5, 0) == no_area;
    ok &= call4(server, READ_BLOCKS, 32, 2, 3) == no_area;
    // SAFETY: the object's four pages are mapped at AREA_AT for this test, which only reads
    // them.
    let area = unsafe { core::slice::from_raw_parts(AREA_AT as *const u8, 4 * BLOCK_SIZE) };
    let mut wrong = 0;
    call(server, op::INVALIDATE, 0)?;
    let requests = call(server, op::WAITS, 0)? >> 32;
    for first in WRITTEN.step_by(4) {
        ok &= call4(server, READ_BLOCKS, first, 4, 0) == Ok(4);
        for b in 0..4u64 {
            let page = &area[b as usize * BLOCK_SIZE..(b as usize + 1) * BLOCK_SIZE];
            if page
                .iter()
                .enumerate()
                .any(|(i, &x)| x != pattern(first + b, i))
            {
                wrong += 1;
            }
        }
    }
    let device = (call(server, op::WAITS, 0)? >> 32) - requests;
    let at_end = call4(server, READ_BLOCKS, blocks - 2, 4, 0);
    println!(
        "blktest: blk0 transfer area: refusals {}, blocks {}..{} read 4 per call with {wrong} \
         wrong in {device} device requests, 4 blocks from the second-last: {at_end:?}",
        if ok { "right" } else { "WRONG" },
        WRITTEN.start,
        WRITTEN.end
    );
    // Detached, the area is gone from the driver; a second detach finds none.
    let detached = [
        call4(server, op::DETACH, 0, 0, 0),
        call4(server, READ_BLOCKS, 32, 1, 0),
        call4(server, op::DETACH, 0, 0, 0),
    ];
    println!("blktest: blk0 detach, read, detach: {detached:?}");
    let detached_right = detached == [Ok(1), no_area, Ok(0)];
    Ok(ok
        && wrong == 0
        && device == (WRITTEN.end - WRITTEN.start) / 4
        && at_end == Ok(2)
        && detached_right)
}

/// One call to a block server: `Ok(r1)` or the driver's error.
fn call(server: u64, operation: u64, block: u64) -> Result<u64, BlkError> {
    call4(server, operation, block, 0, 0)
}

/// Reads `blocks` and returns the FNV-1a checksum of their bytes.
fn checksum(server: u64, blocks: core::ops::Range<u64>) -> Result<u64, BlkError> {
    let mut hash = FNV_OFFSET;
    for block in blocks {
        call(server, op::READ, block)?;
        hash = fnv1a(hash, &own_ppc_buffer()[..BLOCK_SIZE]);
    }
    Ok(hash)
}

/// Reads `WRITTEN` back and counts blocks that differ from the pattern.
fn wrong_blocks(server: u64) -> Result<u64, BlkError> {
    let mut wrong = 0;
    for block in WRITTEN {
        call(server, op::READ, block)?;
        let buffer = own_ppc_buffer();
        if buffer
            .iter()
            .enumerate()
            .any(|(i, &b)| b != pattern(block, i))
        {
            wrong += 1;
        }
    }
    Ok(wrong)
}

fn disk0(server: u64) -> Result<bool, BlkError> {
    let info = call(server, op::INFO, 0)?;
    let blocks = info & !op::READONLY_BIT;
    println!(
        "blktest: blk0: {blocks} blocks, read-only {}",
        info & op::READONLY_BIT != 0
    );
    let sum = checksum(server, HOST_BLOCKS)?;
    println!(
        "blktest: blk0 blocks {}..{} checksum {sum:#018x}",
        HOST_BLOCKS.start, HOST_BLOCKS.end
    );
    for block in WRITTEN {
        for (i, b) in own_ppc_buffer().iter_mut().enumerate() {
            *b = pattern(block, i);
        }
        call(server, op::WRITE, block)?;
    }
    let mut ok = true;
    let start = sys::now_ns();
    let cached = wrong_blocks(server)?;
    let cache_ns = sys::now_ns() - start;
    call(server, op::FLUSH, 0)?;
    call(server, op::INVALIDATE, 0)?;
    let start = sys::now_ns();
    let from_device = wrong_blocks(server)?;
    let device_ns = sys::now_ns() - start;
    let per_block = |ns: u64| ns / 1000 / (WRITTEN.end - WRITTEN.start);
    println!(
        "blktest: blk0 4 KiB reads: {} us each from the cache, {} us from the device (PPC included)",
        per_block(cache_ns),
        per_block(device_ns)
    );
    println!(
        "blktest: blk0 wrote blocks {}..{}; wrong blocks read back: {cached} from the cache, {from_device} from the device",
        WRITTEN.start, WRITTEN.end
    );
    ok &= cached == 0 && from_device == 0;
    ok &= read_on_another_cpu(server)?;
    ok &= transfer_area(server, blocks)?;
    let stats = call(server, op::STATS, 0)?;
    println!(
        "blktest: blk0 cache: {} hits, {} misses",
        stats >> 32,
        stats & 0xffff_ffff
    );
    let waits = call(server, op::WAITS, 0)?;
    println!(
        "blktest: blk0 driver: {} device requests, {} waits for its interrupt",
        waits >> 32,
        waits & 0xffff_ffff
    );
    match call(server, op::READ, blocks) {
        Err(BlkError::OutOfRange) => {
            println!("blktest: blk0 read past the end refused: OutOfRange")
        }
        other => {
            println!("blktest: blk0 read of block {blocks} (past the end): {other:?}");
            ok = false;
        }
    }
    Ok(ok)
}

fn disk1(server: u64) -> Result<bool, BlkError> {
    let info = call(server, op::INFO, 0)?;
    let readonly = info & op::READONLY_BIT != 0;
    println!(
        "blktest: blk1: {} blocks, read-only {readonly}",
        info & !op::READONLY_BIT
    );
    let sum = checksum(server, 0..4)?;
    println!("blktest: blk1 blocks 0..4 checksum {sum:#018x}");
    own_ppc_buffer().fill(0xee);
    match call(server, op::WRITE, 1) {
        Err(BlkError::ReadOnly) => {
            println!("blktest: write to read-only blk1 refused: ReadOnly");
            Ok(readonly)
        }
        other => {
            println!("blktest: write to read-only blk1 was not refused: {other:?}");
            Ok(false)
        }
    }
}

/// This process has no device right: the device calls and passing the right on are refused.
fn no_device_right() -> bool {
    let mut list = [DeviceDesc::default(); 2];
    let refused = [
        sys::device_list(&mut list).err(),
        sys::device_map(0, 0x4000_0000).err(),
        sys::device_irq(0, 1).err(),
        sys::memobj_create(1)
            .and_then(|id| sys::memobj_phys(id, 0))
            .err(),
        sys::spawn("/bin/blkd", 0, SpawnFlags::DEVICES).err(),
    ];
    let ok = refused.iter().all(|e| *e == Some(Error::NotPermitted));
    println!("blktest: device calls without the device right: {refused:?}");
    ok
}

fn main(_arg: u64) -> i64 {
    let mut ok = no_device_right();
    for (name, check) in [
        ("blk0", disk0 as fn(u64) -> Result<bool, BlkError>),
        ("blk1", disk1),
    ] {
        let result = k42_rt::lookup_retrying(name)
            .map_err(|_| BlkError::NoServer)
            .and_then(check);
        match result {
            Ok(true) => {}
            Ok(false) => ok = false,
            Err(e) => {
                println!("blktest: {name}: {e:?}");
                ok = false;
            }
        }
    }
    if ok {
        println!("blktest: all checks passed");
        0
    } else {
        println!("blktest: some checks FAILED");
        1
    }
}
