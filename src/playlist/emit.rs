//! The prefixed fast path's writer: copy a range of complete lines to the output with the
//! same prefix put before every URI line the block scanner flagged, in 16-byte moves that
//! may write past the end of what they copy (the next move overwrites it) so that a short
//! line or the prefix is a few moves, not a call to `memcpy`.

use std::ptr;

/// The bytes put before each plain URI line, kept zero-padded to whole 16-byte moves.
pub(super) struct Prefix {
    padded: Vec<u8>,
    len: usize,
}

impl Prefix {
    pub(super) fn new(bytes: &[u8]) -> Self {
        let mut padded = bytes.to_vec();
        padded.resize(bytes.len().next_multiple_of(16), 0);
        Prefix {
            padded,
            len: bytes.len(),
        }
    }

    pub(super) fn len(&self) -> usize {
        self.len
    }

    pub(super) fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// How many bits of `starts` (bit `i` of word `w`: byte `64·w + i`) lie in `from..to`.
fn bits_in(starts: &[u64], from: usize, to: usize) -> u64 {
    if from >= to {
        return 0;
    }
    let (first, last) = (from / 64, (to - 1) / 64);
    let mut n = 0;
    for (w, &word) in starts.iter().enumerate().take(last + 1).skip(first) {
        n += u64::from(masked(word, w, first, last, from, to).count_ones());
    }
    n
}

/// `word` (number `w` of the range's words `first..=last`) with the bits outside
/// `from..to` cleared.
#[inline(always)]
fn masked(word: u64, w: usize, first: usize, last: usize, from: usize, to: usize) -> u64 {
    let mut m = word;
    if w == first {
        m &= u64::MAX << (from % 64);
    }
    if w == last {
        let hi = to - w * 64; // 1..=64
        if hi < 64 {
            m &= (1u64 << hi) - 1;
        }
    }
    m
}

/// Append `lines[from..to]` to `out`, `prefix` put before every line start that `starts`
/// flags in that range. `starts` covers `lines` (one word per 64 bytes, no bit at or past
/// `lines.len()`).
pub(super) fn emit(
    lines: &[u8],
    starts: &[u64],
    from: usize,
    to: usize,
    prefix: &Prefix,
    out: &mut Vec<u8>,
) {
    assert!(from <= to && to <= lines.len() && starts.len() * 64 >= lines.len());
    let n = if prefix.is_empty() {
        0
    } else {
        bits_in(starts, from, to)
    };
    if n == 0 {
        out.extend_from_slice(&lines[from..to]);
        return;
    }
    let total = to - from + n as usize * prefix.len;
    // Room for the bytes and for the last move's overshoot (< 16 past a line, < the padding
    // past the prefix).
    out.reserve(total + prefix.padded.len() + 16);
    let (first, last) = (from / 64, (to - 1) / 64);
    let src = lines.as_ptr();
    // SAFETY: every write lies in `out`'s spare capacity: `w` never exceeds `total`, and a
    // move writes at most 15 bytes past a run's end or up to the padding's end past the
    // prefix, which `reserve` left room for. Every read lies in `lines` (a run is moved in
    // whole 16-byte reads only when they end inside `lines`, else copied exactly) or in
    // `prefix.padded`. The prefix bytes written past `prefix.len` are overwritten by the
    // next run or left past `set_len`, so all of `out[..len + total]` is initialised, by
    // exactly the bytes the safe version would write. `at` is in `run..to` (bits masked to
    // `from..to`, ascending).
    unsafe {
        let dst = out.as_mut_ptr().add(out.len());
        let mut w = 0usize;
        let mut run = from;
        for (wi, &word) in starts.iter().enumerate().take(last + 1).skip(first) {
            let mut m = masked(word, wi, first, last, from, to);
            while m != 0 {
                let at = wi * 64 + m.trailing_zeros() as usize;
                m &= m - 1;
                let len = at - run;
                if run + len.next_multiple_of(16) <= lines.len() {
                    moves16(src.add(run), dst.add(w), len);
                } else {
                    ptr::copy_nonoverlapping(src.add(run), dst.add(w), len);
                }
                w += len;
                moves16(prefix.padded.as_ptr(), dst.add(w), prefix.len);
                w += prefix.len;
                run = at;
            }
        }
        ptr::copy_nonoverlapping(src.add(run), dst.add(w), to - run);
        w += to - run;
        debug_assert_eq!(w, total);
        out.set_len(out.len() + w);
    }
}

/// Copy `n` bytes in 16-byte moves, the last one reaching up to 15 bytes past `n`.
///
/// # Safety
/// `src` readable and `dst` writable for `n` rounded up to 16 bytes; not overlapping.
#[inline(always)]
unsafe fn moves16(src: *const u8, dst: *mut u8, n: usize) {
    let mut i = 0;
    while i < n {
        // SAFETY: `i < n`, so `i + 16` is within `n` rounded up to 16 (the caller's bound).
        unsafe {
            let v = ptr::read_unaligned(src.add(i).cast::<[u8; 16]>());
            ptr::write_unaligned(dst.add(i).cast::<[u8; 16]>(), v);
        }
        i += 16;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same result by the obvious route.
    fn naive(lines: &[u8], starts: &[u64], from: usize, to: usize, prefix: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        for (i, &b) in lines[from..to].iter().enumerate() {
            let at = from + i;
            if starts[at / 64] >> (at % 64) & 1 == 1 {
                out.extend_from_slice(prefix);
            }
            out.push(b);
        }
        out
    }

    #[test]
    fn emit_is_the_byte_by_byte_copy_for_every_range_and_prefix_length() {
        // Lines of many lengths, the URI starts flagged; the input ends right after a
        // short line so the exact-copy branch near the end is taken too.
        let mut text = Vec::new();
        let mut starts = Vec::new();
        for i in 0..40usize {
            let at = text.len();
            if i % 3 != 0 {
                starts.push(at);
            }
            text.extend(std::iter::repeat_n(b'a' + (i % 26) as u8, i % 37));
            text.push(b'\n');
        }
        text.extend_from_slice(b"x\n");
        starts.push(text.len() - 2);
        let mut words = vec![0u64; text.len().div_ceil(64)];
        for &s in &starts {
            words[s / 64] |= 1 << (s % 64);
        }
        for plen in [0usize, 1, 15, 16, 17, 104, 130] {
            let prefix: Vec<u8> = (0..plen).map(|i| b'A' + (i % 26) as u8).collect();
            let p = Prefix::new(&prefix);
            for from in (0..=text.len()).step_by(7).chain([text.len() - 2]) {
                for to in (from..=text.len()).step_by(11).chain([text.len()]) {
                    let mut out = b"before".to_vec();
                    emit(&text, &words, from, to, &p, &mut out);
                    let want = naive(&text, &words, from, to, &prefix);
                    assert_eq!(&out[..6], b"before");
                    assert_eq!(out[6..], want[..], "plen {plen} {from}..{to}");
                }
            }
        }
    }
}
