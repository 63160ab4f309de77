//! Test support: DMA memory for model devices, whose "physical" addresses are the offsets.

use alloc::vec;
use alloc::vec::Vec;
use core::cell::RefCell;

use super::queue::Dma;

/// Zeroed DMA memory of whole pages, shared by a driver and the model device serving it.
pub struct ModelMemory(pub RefCell<Vec<u8>>);

impl ModelMemory {
    /// `pages` zeroed pages.
    pub fn new(pages: usize) -> ModelMemory {
        ModelMemory(RefCell::new(vec![0; pages * 4096]))
    }
}

/// The little-endian `u16` at `at`.
pub fn r16(mem: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([mem[at], mem[at + 1]])
}

impl Dma for &ModelMemory {
    fn read_u16(&self, offset: usize) -> u16 {
        r16(&self.0.borrow(), offset)
    }
    fn read_u32(&self, offset: usize) -> u32 {
        u32::from_le_bytes(self.0.borrow()[offset..offset + 4].try_into().unwrap())
    }
    fn write_u16(&self, offset: usize, value: u16) {
        self.write_bytes(offset, &value.to_le_bytes());
    }
    fn write_u32(&self, offset: usize, value: u32) {
        self.write_bytes(offset, &value.to_le_bytes());
    }
    fn write_u64(&self, offset: usize, value: u64) {
        self.write_bytes(offset, &value.to_le_bytes());
    }
    fn read_bytes(&self, offset: usize, out: &mut [u8]) {
        out.copy_from_slice(&self.0.borrow()[offset..offset + out.len()]);
    }
    fn write_bytes(&self, offset: usize, bytes: &[u8]) {
        self.0.borrow_mut()[offset..offset + bytes.len()].copy_from_slice(bytes);
    }
    fn phys(&self, offset: usize) -> u64 {
        offset as u64
    }
}
