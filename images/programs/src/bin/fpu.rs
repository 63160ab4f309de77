//! Checks that a dispatcher's x87/SSE registers survive switches to other dispatchers: loads
//! every XMM register and MXCSR with a pattern of its own (argument = seed), yields the CPU
//! many times to a sibling doing the same with another seed, and compares after each turn.
//! Exits 0 if the registers always came back intact.
#![no_std]
#![no_main]

use k42_rt::{println, sys};

k42_rt::entry!(main);

/// FXSAVE image, 16-byte aligned.
#[repr(C, align(16))]
struct Fxsave([u8; 512]);

const MXCSR: core::ops::Range<usize> = 24..28;
const XMM: core::ops::Range<usize> = 160..416;
const TURNS: u64 = 200;

fn main(seed: u64) -> i64 {
    let mut want = Fxsave([0; 512]);
    want.0[0..2].copy_from_slice(&0x037fu16.to_le_bytes());
    // All exceptions masked, and a rounding mode that differs per seed.
    let mxcsr = 0x1f80u32 | ((seed as u32 & 3) << 13);
    want.0[MXCSR].copy_from_slice(&mxcsr.to_le_bytes());
    for (i, byte) in want.0[XMM].iter_mut().enumerate() {
        *byte = (i as u64).wrapping_mul(31).wrapping_add(seed * 97) as u8;
    }
    // SAFETY: FXRSTOR reads 512 aligned bytes with a valid MXCSR (no reserved bits). This code
    // is built soft-float: the compiler never uses the registers loaded here.
    unsafe { core::arch::asm!("fxrstor64 [{}]", in(reg) want.0.as_ptr(), options(nostack)) };
    let mut bad = 0u64;
    for _ in 0..TURNS {
        sys::yield_now();
        let mut now = Fxsave([0; 512]);
        // SAFETY: FXSAVE writes 512 bytes to an aligned buffer of that size.
        unsafe { core::arch::asm!("fxsave64 [{}]", in(reg) now.0.as_mut_ptr(), options(nostack)) };
        if now.0[XMM] != want.0[XMM] || now.0[MXCSR] != want.0[MXCSR] {
            bad += 1;
            // Put ours back, to count every turn that lost them.
            // SAFETY: as above.
            unsafe {
                core::arch::asm!("fxrstor64 [{}]", in(reg) want.0.as_ptr(), options(nostack))
            };
        }
    }
    if bad == 0 {
        println!("fpu {seed}: registers intact over {TURNS} turns");
        0
    } else {
        println!("fpu {seed}: FAILED: registers changed in {bad} of {TURNS} turns");
        1
    }
}
