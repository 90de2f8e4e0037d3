//! A fuzz input read as a script of choices and byte strings.

use crate::proto::ReplyLimits;

/// The unread part of a fuzz input. Reads past the end return zeros and
/// empty slices, so every input is a complete script.
#[derive(Debug)]
pub(super) struct Script<'a> {
    rest: &'a [u8],
}

impl<'a> Script<'a> {
    pub(super) fn new(input: &'a [u8]) -> Self {
        Self { rest: input }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    /// Takes one byte, or 0 at the end.
    pub(super) fn byte(&mut self) -> u8 {
        let Some((&first, rest)) = self.rest.split_first() else {
            return 0;
        };
        self.rest = rest;
        first
    }

    /// Takes up to `len` bytes.
    pub(super) fn bytes(&mut self, len: usize) -> &'a [u8] {
        let (head, rest) = self.rest.split_at(len.min(self.rest.len()));
        self.rest = rest;
        head
    }

    /// Takes everything that is left.
    pub(super) fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.rest)
    }

    /// Reads reply limits: one flag byte, then three bytes when its low bit
    /// selects small limits. Small limits, zero included, let short inputs
    /// reach every limit, and the defaults are what sessions run with.
    pub(super) fn reply_limits(&mut self) -> ReplyLimits {
        if self.byte() & 1 == 0 {
            return ReplyLimits::default();
        }
        ReplyLimits {
            max_line_len: usize::from(self.byte()),
            max_lines: usize::from(self.byte() % 16),
            max_buffered: usize::from(self.byte()) * 4,
        }
    }
}
