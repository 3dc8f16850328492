//! The policy's heap: a bump arena in the module's own zeroed memory, with
//! Rust's default allocator behind it.
//!
//! The host runs every call on a fresh instance and throws it away after, so
//! freeing memory inside one call buys little: a call allocates its input (the
//! host writes every string and list of it through `cabi_realloc`), its
//! output and what the policy builds, then the whole memory is reset. The
//! default allocator (dlmalloc) gets its memory with `memory.grow` on the
//! first allocation of every call; the host then has to widen the memory's
//! accessible range and narrow it again for the next instance, two `mprotect`
//! calls and a TLB shootdown across cores, which cost more than the policy.
//! Here the first [`ARENA_BYTES`] come from a static array (in the module's
//! zero-initialised memory, so no `memory.grow`), handed out by bumping an
//! offset; `dealloc` gives back only the latest block, and `realloc` of the
//! latest block grows it in place. A call that needs more goes on with
//! dlmalloc, which grows memory as before.
//!
//! Only on `wasm32`: native builds (the policy's unit tests) keep the
//! system allocator. No maintained crate does this exact thing (a bump arena
//! in static memory that falls back to the system allocator): `talc` and
//! `lol_alloc` manage a heap they grow themselves, `bumpalo` is an arena
//! object, not a global allocator.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::UnsafeCell;

/// The bytes served from the arena before the fallback allocator takes over.
pub const ARENA_BYTES: usize = 128 << 10;

/// A bump allocator over a static array, then [`System`].
pub struct Arena {
    memory: UnsafeCell<[u8; ARENA_BYTES]>,
    /// The first free byte of `memory`, as an offset.
    next: UnsafeCell<usize>,
}

// SAFETY: a policy runs on one thread (wasm32-unknown-unknown has no
// threads), so the arena is never used from two at once.
unsafe impl Sync for Arena {}

impl Arena {
    /// An empty arena.
    pub const fn new() -> Self {
        Self { memory: UnsafeCell::new([0; ARENA_BYTES]), next: UnsafeCell::new(0) }
    }

    fn base(&self) -> *mut u8 {
        self.memory.get().cast()
    }

    fn owns(&self, ptr: *mut u8) -> bool {
        let start = self.base() as usize;
        (start..start + ARENA_BYTES).contains(&(ptr as usize))
    }
}

impl Default for Arena {
    fn default() -> Self {
        Self::new()
    }
}

// SAFETY: blocks handed out never overlap (the offset only grows, except
// when the latest block is given back or resized in place), are aligned as
// asked, and stay inside the array; everything else is `System`'s.
unsafe impl GlobalAlloc for Arena {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: one thread (see `Sync` above).
        let next = unsafe { &mut *self.next.get() };
        let start = self.base() as usize;
        let aligned = (start + *next).next_multiple_of(layout.align()) - start;
        match aligned.checked_add(layout.size()) {
            Some(end) if end <= ARENA_BYTES => {
                *next = end;
                // SAFETY: `aligned` is inside the array.
                unsafe { self.base().add(aligned) }
            }
            // SAFETY: forwarded as is.
            _ => unsafe { System.alloc(layout) },
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if !self.owns(ptr) {
            // SAFETY: `System` handed it out.
            return unsafe { System.dealloc(ptr, layout) };
        }
        // SAFETY: one thread.
        let next = unsafe { &mut *self.next.get() };
        let offset = ptr as usize - self.base() as usize;
        if offset + layout.size() == *next {
            *next = offset;
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if self.owns(ptr) {
            // SAFETY: one thread.
            let next = unsafe { &mut *self.next.get() };
            let offset = ptr as usize - self.base() as usize;
            let latest = offset + layout.size() == *next;
            if latest && offset + new_size <= ARENA_BYTES {
                *next = offset + new_size;
                return ptr;
            }
            if new_size <= layout.size() {
                return ptr;
            }
        } else {
            // SAFETY: `System` handed it out.
            return unsafe { System.realloc(ptr, layout, new_size) };
        }
        // SAFETY: the caller's layout with the new size is valid (the
        // `GlobalAlloc::realloc` contract); the old block is copied and freed.
        unsafe {
            let new_layout = Layout::from_size_align_unchecked(new_size, layout.align());
            let new = self.alloc(new_layout);
            if !new.is_null() {
                std::ptr::copy_nonoverlapping(ptr, new, layout.size());
                self.dealloc(ptr, layout);
            }
            new
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_aligned_do_not_overlap_and_spill_to_the_system_allocator() {
        let arena = Box::new(Arena::new());
        unsafe {
            let a = arena.alloc(Layout::from_size_align(3, 1).unwrap());
            let b = arena.alloc(Layout::from_size_align(8, 8).unwrap());
            assert!(arena.owns(a) && arena.owns(b));
            assert_eq!(b as usize % 8, 0);
            assert!(b as usize >= a as usize + 3);
            // The latest block grows in place.
            let b2 = arena.realloc(b, Layout::from_size_align(8, 8).unwrap(), 64);
            assert_eq!(b, b2);
            // An older block moves, keeping its bytes.
            a.write_bytes(7, 3);
            let a2 = arena.realloc(a, Layout::from_size_align(3, 1).unwrap(), 100);
            assert_ne!(a, a2);
            assert_eq!(std::slice::from_raw_parts(a2, 3), &[7, 7, 7]);
            // What does not fit comes from the system allocator, and goes back to it.
            let big = Layout::from_size_align(ARENA_BYTES, 1).unwrap();
            let c = arena.alloc(big);
            assert!(!c.is_null() && !arena.owns(c));
            arena.dealloc(c, big);
            // The latest block given back is reused.
            let d = arena.alloc(Layout::from_size_align(16, 1).unwrap());
            arena.dealloc(d, Layout::from_size_align(16, 1).unwrap());
            let e = arena.alloc(Layout::from_size_align(16, 1).unwrap());
            assert_eq!(d, e);
        }
    }
}
