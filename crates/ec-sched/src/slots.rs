//! The connection slot table: slots reused under new generations, so a stale
//! [`ConnectionHandle`] never reaches the next connection in its slot.

use ec_types::ConnectionHandle;

/// A table of values addressed by [`ConnectionHandle`]. Insert, lookup and
/// removal are O(1); freed slots are reused last-freed first.
#[derive(Debug)]
pub(crate) struct SlotTable<T> {
    slots: Vec<Slot<T>>,
    free: Vec<u32>,
    len: usize,
}

#[derive(Debug)]
struct Slot<T> {
    generation: u32,
    value: Option<T>,
}

impl<T> SlotTable<T> {
    pub(crate) fn new() -> Self {
        Self {
            slots: Vec::new(),
            free: Vec::new(),
            len: 0,
        }
    }

    /// Stores the value that `make` builds from its handle and returns the
    /// handle.
    pub(crate) fn insert_with(
        &mut self,
        make: impl FnOnce(ConnectionHandle) -> T,
    ) -> ConnectionHandle {
        let index = match self.free.pop() {
            Some(index) => index,
            None => {
                let index = u32::try_from(self.slots.len())
                    .expect("more than 2^32 connection slots: the engine limit is a u32");
                self.slots.push(Slot {
                    generation: 0,
                    value: None,
                });
                index
            }
        };
        let slot = &mut self.slots[index as usize];
        let handle = ConnectionHandle {
            slot: index,
            generation: slot.generation,
        };
        slot.value = Some(make(handle));
        self.len += 1;
        handle
    }

    pub(crate) fn get(&self, handle: ConnectionHandle) -> Option<&T> {
        let slot = self.slots.get(handle.slot as usize)?;
        if slot.generation != handle.generation {
            return None;
        }
        slot.value.as_ref()
    }

    pub(crate) fn get_mut(&mut self, handle: ConnectionHandle) -> Option<&mut T> {
        let slot = self.slots.get_mut(handle.slot as usize)?;
        if slot.generation != handle.generation {
            return None;
        }
        slot.value.as_mut()
    }

    /// Removes the value and bumps the slot's generation, so `handle` and
    /// every copy of it go stale.
    pub(crate) fn remove(&mut self, handle: ConnectionHandle) -> Option<T> {
        let slot = self.slots.get_mut(handle.slot as usize)?;
        if slot.generation != handle.generation {
            return None;
        }
        let value = slot.value.take()?;
        slot.generation = slot.generation.wrapping_add(1);
        self.free.push(handle.slot);
        self.len -= 1;
        Some(value)
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Every occupied slot, in slot order. O(slots): for audits and
    /// shutdown, never per event.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (ConnectionHandle, &T)> {
        self.slots.iter().enumerate().filter_map(|(index, slot)| {
            let handle = ConnectionHandle {
                slot: index as u32,
                generation: slot.generation,
            };
            slot.value.as_ref().map(|value| (handle, value))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_reuse_bumps_generation() {
        let mut table = SlotTable::new();
        let first = table.insert_with(|_| "first");
        assert_eq!(table.remove(first), Some("first"));

        let second = table.insert_with(|_| "second");
        assert_eq!(second.slot, first.slot);
        assert_ne!(second.generation, first.generation);
        assert_eq!(table.get(first), None);
        assert_eq!(table.get(second), Some(&"second"));
    }

    #[test]
    fn stale_remove_is_refused() {
        let mut table = SlotTable::new();
        let handle = table.insert_with(|_| 1);
        assert_eq!(table.remove(handle), Some(1));
        assert_eq!(table.remove(handle), None);
        assert_eq!(table.len(), 0);
        assert!(table.is_empty());
    }

    #[test]
    fn insert_passes_own_handle() {
        let mut table = SlotTable::new();
        let handle = table.insert_with(|handle| handle);
        assert_eq!(table.get(handle), Some(&handle));
        let other = table.insert_with(|handle| handle);
        assert_ne!(other.slot, handle.slot);
        let handles: Vec<_> = table.iter().map(|(h, _)| h).collect();
        assert_eq!(handles, vec![handle, other]);
    }
}
