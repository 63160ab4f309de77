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

    /// The cached copy of `block`, if any, without counting it or marking it used (another
    /// CPU's part of a distributed cache copying it).
    pub fn peek(&self, block: u64) -> Option<&[u8; BLOCK_SIZE]> {
        self.find(block).map(|i| &*self.slots[i].data)
    }

    /// Caches `data` (at most a block; the rest of the block is zero) as `block`, replacing
    /// a cached copy or, when full, the first unreferenced block the clock hand finds; returns
    /// the block that was replaced to make room, if any.
    pub fn insert(&mut self, block: u64, data: &[u8]) -> Option<u64> {
        let n = data.len().min(BLOCK_SIZE);
        if let Some(i) = self.find(block) {
            let slot = &mut self.slots[i];
            slot.data[..n].copy_from_slice(&data[..n]);
            slot.data[n..].fill(0);
            slot.referenced = true;
            return None;
        }
        let mut evicted = None;
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
            evicted = Some(old);
            self.slots[victim].block = block;
            self.slots[victim].referenced = true;
            victim
        };
        self.slots[i].data[..n].copy_from_slice(&data[..n]);
        self.slots[i].data[n..].fill(0);
        let chain = self.bucket(block);
        self.buckets[chain].push(i as u32);
        evicted
    }

    /// Forgets `block`; returns whether it was cached.
    pub fn remove(&mut self, block: u64) -> bool {
        let Some(i) = self.find(block) else {
            return false;
        };
        // The last slot moves into the freed one.
        let last = self.slots.len() - 1;
        let chain = self.bucket(block);
        self.buckets[chain].retain(|&s| s as usize != i);
        if i != last {
            let moved = self.slots[last].block;
            let chain = self.bucket(moved);
            for s in self.buckets[chain].iter_mut() {
                if *s as usize == last {
                    *s = i as u32;
                }
            }
        }
        self.slots.swap_remove(i);
        if self.hand >= self.slots.len() {
            self.hand = 0;
        }
        true
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
    fn removal_and_eviction_are_reported() {
        let mut cache = BlockCache::new(3);
        for b in 0..3u64 {
            assert_eq!(cache.insert(b, &block_of(b as u8)), None);
        }
        assert_eq!(
            cache.insert(1, &block_of(11)),
            None,
            "an update evicts nothing"
        );
        assert!(cache.remove(0));
        assert!(!cache.remove(0), "gone already");
        assert_eq!(cache.len(), 2);
        // The slot that moved into the hole is still found, by lookup and by peek.
        assert_eq!(cache.peek(2).map(|d| d[0]), Some(2));
        assert_eq!(cache.get(1).map(|d| d[0]), Some(11));
        assert_eq!(cache.insert(7, &block_of(7)), None, "room again");
        let evicted = cache.insert(8, &block_of(8)).expect("full: one goes");
        assert!([1, 2, 7].contains(&evicted));
        assert!(cache.peek(evicted).is_none());
        assert_eq!(cache.len(), 3);
        let (hits, misses) = cache.stats();
        assert_eq!((hits, misses), (1, 0), "peek counts nothing");
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
