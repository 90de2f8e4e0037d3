//! The idle list of a binding × domain.

use ec_types::ConnectionHandle;

/// How many handles an idle list stores without a heap buffer.
const INLINE: usize = 2;

/// The idle connections of one binding × domain, most recently idle last.
///
/// Up to two handles are stored in the list itself, so in the lane, and
/// only a longer list has a heap buffer. A lane seldom has more than one
/// idle connection, and with 100,000 domains a buffer per lane would be one
/// more cache miss each time the scheduler touches a lane whose data is
/// out of the CPU caches.
#[derive(Debug, Clone)]
pub(crate) enum IdleList {
    /// The first `len` handles are the list.
    Inline {
        handles: [ConnectionHandle; INLINE],
        len: u8,
    },
    /// A list that grew past the inline capacity. It stays on the heap
    /// until it is empty, so a list whose length moves around the
    /// capacity does not move back and forth.
    Heap(Vec<ConnectionHandle>),
}

/// The value of inline slots without a handle. It is never read.
const UNUSED: ConnectionHandle = ConnectionHandle {
    slot: u32::MAX,
    generation: 0,
};

impl Default for IdleList {
    fn default() -> Self {
        Self::Inline {
            handles: [UNUSED; INLINE],
            len: 0,
        }
    }
}

impl IdleList {
    pub(crate) fn as_slice(&self) -> &[ConnectionHandle] {
        match self {
            Self::Inline { handles, len } => &handles[..usize::from(*len)],
            Self::Heap(handles) => handles,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.as_slice().len()
    }

    pub(crate) fn push(&mut self, handle: ConnectionHandle) {
        match self {
            Self::Inline { handles, len } if usize::from(*len) < INLINE => {
                handles[usize::from(*len)] = handle;
                *len += 1;
            }
            Self::Inline { handles, .. } => {
                let mut spilled = Vec::with_capacity(2 * INLINE);
                spilled.extend_from_slice(handles);
                spilled.push(handle);
                *self = Self::Heap(spilled);
            }
            Self::Heap(handles) => handles.push(handle),
        }
    }

    /// Removes and returns the most recently idle handle.
    pub(crate) fn pop(&mut self) -> Option<ConnectionHandle> {
        match self {
            Self::Inline { handles, len } => {
                let last = usize::from(*len).checked_sub(1)?;
                *len -= 1;
                Some(handles[last])
            }
            Self::Heap(handles) => {
                let handle = handles.pop();
                if handles.is_empty() {
                    *self = Self::default();
                }
                handle
            }
        }
    }

    /// Removes `handle` and moves the last handle into its place. Returns
    /// whether the handle was in the list.
    pub(crate) fn remove(&mut self, handle: ConnectionHandle) -> bool {
        let Some(position) = self.as_slice().iter().position(|h| *h == handle) else {
            return false;
        };
        match self {
            Self::Inline { handles, len } => {
                let last = usize::from(*len) - 1;
                handles[position] = handles[last];
                *len -= 1;
            }
            Self::Heap(handles) => {
                handles.swap_remove(position);
                if handles.is_empty() {
                    *self = Self::default();
                }
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handle(slot: u32) -> ConnectionHandle {
        ConnectionHandle {
            slot,
            generation: 1,
        }
    }

    #[test]
    fn idle_list_is_last_in_first_out() {
        let mut list = IdleList::default();
        assert_eq!(list.pop(), None);
        for slot in 1..=5 {
            list.push(handle(slot));
            assert_eq!(list.len(), slot as usize);
        }
        assert!(matches!(list, IdleList::Heap(_)));
        assert_eq!(
            list.as_slice(),
            &[handle(1), handle(2), handle(3), handle(4), handle(5)]
        );

        let popped: Vec<_> = std::iter::from_fn(|| list.pop()).collect();
        assert_eq!(
            popped,
            vec![handle(5), handle(4), handle(3), handle(2), handle(1)]
        );
        assert!(matches!(list, IdleList::Inline { len: 0, .. }));
    }

    #[test]
    fn idle_removal_keeps_others() {
        for count in [1, 2, 3, 4] {
            for removed in 1..=count {
                let mut list = IdleList::default();
                for slot in 1..=count {
                    list.push(handle(slot));
                }
                assert!(list.remove(handle(removed)), "{removed} of {count}");
                assert!(!list.remove(handle(removed)), "{removed} of {count}");

                let mut left: Vec<u32> = list.as_slice().iter().map(|h| h.slot).collect();
                left.sort_unstable();
                let expected: Vec<u32> = (1..=count).filter(|slot| *slot != removed).collect();
                assert_eq!(left, expected, "{removed} of {count}");
            }
        }
    }

    #[test]
    fn emptied_list_drops_buffer() {
        let mut list = IdleList::default();
        for slot in 1..=3 {
            list.push(handle(slot));
        }
        for slot in 1..=3 {
            assert!(list.remove(handle(slot)));
        }
        assert!(matches!(list, IdleList::Inline { len: 0, .. }));
        list.push(handle(9));
        assert_eq!(list.as_slice(), &[handle(9)]);
    }
}
