//! A page-sized block cache (K42's file cache manager in its simplest form): a hash table of
//! cached blocks over a fixed number of page frames, replaced by the clock algorithm. The
//! driver writes through it, so it never holds the only copy of anything.

use alloc::boxed::Box;
use alloc::vec;
use alloc::vec::Vec;

use super::blk::BLOCK_SIZE;

struct Slot {
    block: u64,
    data: Box<[u8; BLOCK_SIZE]>,
    referenced: bool,
}

/// The cache.
pub struct BlockCache {
    slots: Vec<Slot>,
    /// Hash chains: slot indices by hash of the block number.
    buckets: Vec<Vec<u32>>,
    capacity: usize,
    hand: usize,
    hits: u64,
    misses: u64,
}

impl core::fmt::Debug for BlockCache {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("BlockCache")
            .field("cached", &self.slots.len())
            .field("capacity", &self.capacity)
            .field("hits", &self.hits)
            .field("misses", &self.misses)
            .finish()
    }
}

impl BlockCache {
    /// A cache of at most `capacity` blocks (at least one).
    pub fn new(capacity: usize) -> BlockCache {
        let capacity = capacity.max(1);
        BlockCache {
            slots: Vec::new(),
            buckets: vec![Vec::new(); capacity.next_power_of_two()],
            capacity,
            hand: 0,
            hits: 0,
            misses: 0,
        }
    }

    fn bucket(&self, block: u64) -> usize {
        let hash = block.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32;
        hash as usize & (self.buckets.len() - 1)
    }

    fn find(&self, block: u64) -> Option<usize> {
        self.buckets[self.bucket(block)]
            .iter()
            .map(|&i| i as usize)
            .find(|&i| self.slots[i].block == block)
    }

    /// The cached copy of `block`, if any (counted as a hit or a miss).
    pub fn get(&mut self, block: u64) -> Option<&[u8; BLOCK_SIZE]> {
        match self.find(block) {
            Some(i) => {
                self.hits += 1;
                self.slots[i].referenced = true;
                Some(&self.slots[i].data)
            }
            None => {
                self.misses += 1;
                None
            }
        }
    }

    /// Caches `data` (at most a block; the rest of the block is zero) as `block`, replacing
    /// a cached copy or, when full, the first unreferenced block the clock hand finds.
    pub fn insert(&mut self, block: u64, data: &[u8]) {
        let n = data.len().min(BLOCK_SIZE);
        if let Some(i) = self.find(block) {
            let slot = &mut self.slots[i];
            slot.data[..n].copy_from_slice(&data[..n]);
            slot.data[n..].fill(0);
            slot.referenced = true;
            return;
        }
        let i = if self.slots.len() < self.capacity {
            self.slots.push(Slot {
                block,
                data: Box::new([0; BLOCK_SIZE]),
                referenced: true,
            });
            self.slots.len() - 1
        } else {
            let victim = loop {
                let i = self.hand;
                self.hand = (self.hand + 1) % self.slots.len();
                if !core::mem::replace(&mut self.slots[i].referenced, false) {
                    break i;
                }
            };
            let old = self.slots[victim].block;
            let chain = self.bucket(old);
            self.buckets[chain].retain(|&s| s as usize != victim);
            self.slots[victim].block = block;
            self.slots[victim].referenced = true;
            victim
        };
        self.slots[i].data[..n].copy_from_slice(&data[..n]);
        self.slots[i].data[n..].fill(0);
        let chain = self.bucket(block);
        self.buckets[chain].push(i as u32);
    }

    /// Forgets every block.
    pub fn clear(&mut self) {
        self.slots.clear();
        self.buckets.iter_mut().for_each(Vec::clear);
        self.hand = 0;
    }

    /// (hits, misses) so far.
    pub fn stats(&self) -> (u64, u64) {
        (self.hits, self.misses)
    }

    /// Blocks cached now.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block_of(byte: u8) -> [u8; BLOCK_SIZE] {
        [byte; BLOCK_SIZE]
    }

    #[test]
    fn hits_misses_and_replacement() {
        let mut cache = BlockCache::new(4);
        assert!(cache.get(7).is_none());
        for b in 0..4u64 {
            cache.insert(b * 1000, &block_of(b as u8));
        }
        assert_eq!(cache.len(), 4);
        assert_eq!(cache.get(2000).map(|d| d[100]), Some(2));
        // Updating in place keeps the count.
        cache.insert(2000, &[9; 10]);
        let data = cache.get(2000).unwrap();
        assert_eq!((data[9], data[10]), (9, 0));
        // Full: a fifth block replaces one, and the cache stays consistent.
        cache.insert(5, &block_of(5));
        assert_eq!(cache.len(), 4);
        assert_eq!(cache.get(5).map(|d| d[0]), Some(5));
        let present = [0u64, 1000, 2000, 3000]
            .iter()
            .filter(|&&b| cache.get(b).is_some())
            .count();
        assert_eq!(present, 3);
        let (hits, misses) = cache.stats();
        assert_eq!(hits + misses, 1 + 1 + 1 + 1 + 4);
        cache.clear();
        assert!(cache.is_empty() && cache.get(5).is_none());
    }

    #[test]
    fn many_blocks_through_a_small_cache_stay_correct() {
        let mut cache = BlockCache::new(8);
        for round in 0..3u64 {
            for b in 0..100u64 {
                let byte = (b + round) as u8;
                cache.insert(b, &block_of(byte));
                assert_eq!(cache.get(b).map(|d| d[4095]), Some(byte));
            }
        }
        assert_eq!(cache.len(), 8);
        let cached = (0..100).filter(|&b| cache.get(b).is_some()).count();
        assert_eq!(cached, 8);
    }
}
