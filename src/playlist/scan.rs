//! The rewriter's block scanner: 64 bytes at a time, SIMD compares turned into one bit per
//! byte (SSE2, which every x86-64 has; plain Rust elsewhere), and the lines of a whole chunk
//! classified with bit arithmetic instead of byte by byte. (An AVX2 variant measured slower
//! here: see bench/README.md.)
//!
//! For a chunk of complete lines it finds (a) where every URI line starts (a line whose
//! first byte is not `#`, `\r` or `\n`) and (b) which lines need the rewriter's general,
//! line-by-line path: a tag line holding a `"` (it may carry `URI="..."`), a URI line that
//! is not a plain relative reference (a `:` or `?` anywhere, a `.` right after a `/`, or a
//! first byte `/`, `.`, space, tab or `\r`: see [`super::is_plain_relative`]). Every other line is copied as it is, or, for a plain URI line, with the
//! prefix before it. A line's region (its first byte to its `\n`) comes from one
//! subtraction: `(E - S) ^ E` sets every bit from each start in `S` to the first end in `E`
//! after it, the borrow carrying a line on into the next block.

use super::MAX_LINE;

/// One bit per byte of a 64-byte block, for each class of byte the scanner looks at.
#[derive(Default, Clone, Copy)]
struct Masks {
    nl: u64,
    hash: u64,
    quote: u64,
    /// `:` or `?`.
    colon_q: u64,
    slash: u64,
    dot: u64,
    /// A byte no URI line may start with: `/`, `.`, space, tab, `\r`.
    first_bad: u64,
}

/// What [`scan`] found, kept between calls so its buffers are reused.
#[derive(Default)]
pub(super) struct Scan {
    /// Per block of 64 bytes, the URI line starts in it (bit i: byte 64·block + i).
    pub starts: Vec<u64>,
    /// Starts of the lines that take the general path, in order.
    pub slow: Vec<usize>,
}

/// A line of more than [`MAX_LINE`] bytes.
pub(super) struct TooLong;

/// Bits from each start in `s` to its end in `e` (the end included); `borrow`: a line runs
/// on from the block before (in) / into the next (out).
#[inline(always)]
fn region(s: u64, e: u64, borrow: &mut u64) -> u64 {
    let (d, out) = e.overflowing_sub(s | *borrow);
    *borrow = u64::from(out);
    d ^ e
}

/// Classify `buf`: complete lines (it starts at a line's first byte and ends with `\n`).
/// On x86-64 the widest compares the CPU has are used (AVX-512BW, AVX2, else SSE2, which
/// every x86-64 has), each variant compiled as a whole loop for its instruction set.
pub(super) fn scan(buf: &[u8], out: &mut Scan) -> Result<(), TooLong> {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: `Level::get` is never wider than what the CPU has.
        unsafe { x86::Level::get().scan(buf, out) }
    }
    #[cfg(not(target_arch = "x86_64"))]
    return scan_with(buf, out, portable);
}

#[inline(always)]
fn scan_with(
    buf: &[u8],
    out: &mut Scan,
    classify: impl Fn(&[u8; 64]) -> Masks,
) -> Result<(), TooLong> {
    let mut line_carry = 1u64; // byte 0 starts a line
    let mut slash_carry = 0u64;
    let mut tag_borrow = 0u64;
    let mut uri_borrow = 0u64;
    let mut prev_nl: isize = -1;
    let mut slow_until = 0usize; // bytes before this are in a line already listed slow
    for (i, block) in buf.chunks(64).enumerate() {
        let base = i * 64;
        let (m, valid) = match <&[u8; 64]>::try_from(block) {
            Ok(b) => (classify(b), u64::MAX),
            Err(_) => {
                let mut b = [0u8; 64];
                b[..block.len()].copy_from_slice(block);
                (classify(&b), (1u64 << block.len()) - 1)
            }
        };
        let starts = ((m.nl << 1) | line_carry) & valid;
        line_carry = m.nl >> 63;
        // (A line starting with `\r` counts as a URI line here; it is always slow.)
        let uri = starts & !(m.hash | m.nl);
        let tag = region(starts & m.hash, m.nl, &mut tag_borrow);
        let in_uri = region(uri, m.nl, &mut uri_borrow);
        let dot_after_slash = m.dot & ((m.slash << 1) | slash_carry);
        slash_carry = m.slash >> 63;
        let mut bad =
            (tag & m.quote) | (in_uri & (m.colon_q | dot_after_slash)) | (uri & m.first_bad);
        if m.nl != 0 {
            let first = (base + m.nl.trailing_zeros() as usize) as isize;
            if first - prev_nl - 1 > MAX_LINE as isize {
                return Err(TooLong);
            }
            prev_nl = (base + 63 - m.nl.leading_zeros() as usize) as isize;
        }
        out.starts.push(uri);
        while bad != 0 {
            let at = base + bad.trailing_zeros() as usize;
            bad &= bad - 1;
            if at < slow_until {
                continue;
            }
            let start = memchr::memrchr(b'\n', &buf[..at]).map_or(0, |p| p + 1);
            out.slow.push(start);
            slow_until = memchr::memchr(b'\n', &buf[at..]).map_or(buf.len(), |p| at + p + 1);
        }
    }
    Ok(())
}

#[cfg(any(test, not(target_arch = "x86_64")))]
fn portable(b: &[u8; 64]) -> Masks {
    let mut m = Masks::default();
    for (i, &c) in b.iter().enumerate() {
        let bit = 1u64 << i;
        match c {
            b'\n' => m.nl |= bit,
            b'#' => m.hash |= bit,
            b'"' => m.quote |= bit,
            b':' | b'?' => m.colon_q |= bit,
            b'/' => {
                m.slash |= bit;
                m.first_bad |= bit
            }
            b'.' => {
                m.dot |= bit;
                m.first_bad |= bit
            }
            b' ' | b'\t' | b'\r' => m.first_bad |= bit,
            _ => {}
        }
    }
    m
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{scan_with, Masks, Scan, TooLong};
    use std::arch::x86_64::*;

    /// The widest compares this CPU offers.
    #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
    pub(super) enum Level {
        Avx512,
        Avx2,
        Sse2,
    }

    impl Level {
        /// Decided once per process: the widest the CPU has, or a narrower one named by
        /// the environment variable `HLSGATE_SCAN` (`avx2`, `sse2`: to compare the variants
        /// on one machine, or to rule one out); a wider one than the CPU has is not taken.
        #[inline]
        pub(super) fn get() -> Level {
            static LEVEL: std::sync::LazyLock<Level> = std::sync::LazyLock::new(|| {
                Level::pick(
                    Level::detect(),
                    std::env::var("HLSGATE_SCAN").ok().as_deref(),
                )
            });
            *LEVEL
        }

        /// The widest level this CPU has.
        pub(super) fn detect() -> Level {
            if is_x86_feature_detected!("avx512bw") {
                Level::Avx512
            } else if is_x86_feature_detected!("avx2") {
                Level::Avx2
            } else {
                Level::Sse2
            }
        }

        /// `cpu`, or `asked` when it names a level no wider.
        pub(super) fn pick(cpu: Level, asked: Option<&str>) -> Level {
            let asked = match asked {
                Some("avx512") => Level::Avx512,
                Some("avx2") => Level::Avx2,
                Some("sse2") => Level::Sse2,
                _ => return cpu,
            };
            // Declared widest first: a greater one is narrower.
            asked.max(cpu)
        }

        /// Whether this CPU can run this level's variant.
        #[cfg(test)]
        pub(super) fn available(self) -> bool {
            self >= Level::detect()
        }

        /// [`scan_with`] compiled for this level.
        ///
        /// # Safety
        /// The CPU must have this level's instructions (no wider than [`Level::detect`]).
        pub(super) unsafe fn scan(self, buf: &[u8], out: &mut Scan) -> Result<(), TooLong> {
            match self {
                // SAFETY: the caller's promise.
                Level::Avx512 => unsafe { scan_avx512(buf, out) },
                Level::Avx2 => unsafe { scan_avx2(buf, out) },
                Level::Sse2 => scan_with(buf, out, sse2),
            }
        }
    }

    /// [`scan_with`] compiled for AVX-512BW, the classifier inlined into the loop.
    ///
    /// # Safety
    /// The CPU must have AVX-512BW.
    #[target_feature(enable = "avx512bw")]
    unsafe fn scan_avx512(buf: &[u8], out: &mut Scan) -> Result<(), TooLong> {
        // SAFETY: this function only runs where AVX-512BW is available.
        scan_with(buf, out, |b| unsafe { avx512(b) })
    }

    /// [`scan_with`] compiled for AVX2.
    ///
    /// # Safety
    /// The CPU must have AVX2.
    #[target_feature(enable = "avx2")]
    unsafe fn scan_avx2(buf: &[u8], out: &mut Scan) -> Result<(), TooLong> {
        // SAFETY: this function only runs where AVX2 is available.
        scan_with(buf, out, |b| unsafe { avx2(b) })
    }

    /// The whole block in one register: each compare gives the block's 64-bit mask.
    ///
    /// # Safety
    /// The CPU must have AVX-512BW.
    #[target_feature(enable = "avx512bw")]
    #[inline]
    pub(super) unsafe fn avx512(b: &[u8; 64]) -> Masks {
        // SAFETY: the load reads the 64 bytes of `b`, with no alignment requirement.
        let v = unsafe { _mm512_loadu_si512(b.as_ptr().cast()) };
        let eq = |c: u8| _mm512_cmpeq_epi8_mask(v, _mm512_set1_epi8(c as i8));
        let slash = eq(b'/');
        let dot = eq(b'.');
        Masks {
            nl: eq(b'\n'),
            hash: eq(b'#'),
            quote: eq(b'"'),
            colon_q: eq(b':') | eq(b'?'),
            slash,
            dot,
            first_bad: slash | dot | eq(b' ') | eq(b'\t') | eq(b'\r'),
        }
    }

    /// `x`, through an empty `asm!` that LLVM cannot look into. Without it LLVM merges the
    /// two halves' `movemask`s into one 64-lane mask that AVX2 has no instruction for and
    /// takes it apart bit by bit (measured: 6× slower than SSE2).
    #[inline(always)]
    fn opaque(mut x: u32) -> u32 {
        // SAFETY: the template is a comment; it reads and writes only `x`'s register.
        unsafe {
            std::arch::asm!("/* {0:e} */", inout(reg) x, options(pure, nomem, nostack, preserves_flags));
        }
        x
    }

    /// The classifier's body for one vector width: `$lanes` vectors of `$width` bytes, each
    /// compare's `movemask` (passed through `$mask_bits`) shifted into place.
    macro_rules! by_lanes {
        ($b:ident, $lanes:literal, $width:literal, $load:ident, $set1:ident, $cmpeq:ident,
         $or:ident, $movemask:ident, $mask_bits:expr) => {{
            let mut m = Masks::default();
            for k in 0..$lanes {
                // SAFETY: the caller's CPU has the instructions (SSE2 is part of x86-64;
                // the AVX2 caller requires AVX2); the load reads `$width` bytes inside `$b`
                // (offset `$width`·k, k < `$lanes`, `$lanes`·`$width` = 64), with no
                // alignment requirement.
                unsafe {
                    let v = $load($b.as_ptr().add($width * k).cast());
                    let eq = |c: u8| $cmpeq(v, $set1(c as i8));
                    let bits = |x| u64::from($mask_bits($movemask(x))) << ($width * k);
                    m.nl |= bits(eq(b'\n'));
                    m.hash |= bits(eq(b'#'));
                    m.quote |= bits(eq(b'"'));
                    m.colon_q |= bits($or(eq(b':'), eq(b'?')));
                    let slash = eq(b'/');
                    let dot = eq(b'.');
                    m.slash |= bits(slash);
                    m.dot |= bits(dot);
                    let blank = $or(eq(b' '), eq(b'\t'));
                    let odd = $or(blank, eq(b'\r'));
                    m.first_bad |= bits($or($or(slash, dot), odd));
                }
            }
            m
        }};
    }

    /// Two 32-byte halves.
    ///
    /// # Safety
    /// The CPU must have AVX2.
    #[target_feature(enable = "avx2")]
    #[inline]
    pub(super) unsafe fn avx2(b: &[u8; 64]) -> Masks {
        by_lanes!(
            b,
            2,
            32,
            _mm256_loadu_si256,
            _mm256_set1_epi8,
            _mm256_cmpeq_epi8,
            _mm256_or_si256,
            _mm256_movemask_epi8,
            |m: i32| opaque(m as u32)
        )
    }

    /// 16 bytes at a time: SSE2 is part of x86-64 itself.
    #[inline(always)]
    pub(super) fn sse2(b: &[u8; 64]) -> Masks {
        by_lanes!(
            b,
            4,
            16,
            _mm_loadu_si128,
            _mm_set1_epi8,
            _mm_cmpeq_epi8,
            _mm_or_si128,
            _mm_movemask_epi8,
            |m: i32| m as u16
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Classifier = fn(&[u8; 64]) -> Masks;

    /// The classifiers this CPU can run, by name (the portable one is the reference).
    fn classifiers() -> Vec<(&'static str, Classifier)> {
        #[allow(unused_mut)]
        let mut v: Vec<(&'static str, Classifier)> = vec![("portable", portable)];
        #[cfg(target_arch = "x86_64")]
        {
            v.push(("sse2", x86::sse2));
            if x86::Level::Avx2.available() {
                // SAFETY: AVX2 is available (checked).
                v.push(("avx2", |b| unsafe { x86::avx2(b) }));
            }
            if x86::Level::Avx512.available() {
                // SAFETY: AVX-512BW is available (checked).
                v.push(("avx512", |b| unsafe { x86::avx512(b) }));
            }
        }
        v
    }

    #[test]
    fn every_classifier_agrees_with_the_portable_one() {
        let all = classifiers();
        eprintln!(
            "classifiers: {:?}",
            all.iter().map(|c| c.0).collect::<Vec<_>>()
        );
        let fields = |m: Masks| {
            [
                m.nl,
                m.hash,
                m.quote,
                m.colon_q,
                m.slash,
                m.dot,
                m.first_bad,
            ]
        };
        let mut b = [0u8; 64];
        for seed in 0..2000u32 {
            for (i, x) in b.iter_mut().enumerate() {
                let r = (seed.wrapping_mul(2654435761) ^ (i as u32).wrapping_mul(40503)) >> 7;
                *x = b"\n#\":?/. \t\rab\x00\xff"[(r % 14) as usize];
            }
            let want = fields(portable(&b));
            assert_ne!(want, [0; 7]);
            for (name, classify) in &all {
                assert_eq!(fields(classify(&b)), want, "{name} {b:?}");
            }
        }
    }

    /// `scan` (whichever variant the CPU picks) and the loop run with each classifier give
    /// what the portable one gives, on a playlist with every kind of line at every offset.
    #[test]
    fn every_variant_of_the_whole_scan_agrees() {
        let mut text = String::new();
        for i in 0..300 {
            text.push_str(&"x".repeat(i % 70));
            text.push_str(
                [
                    "\n#EXTINF:2,\n",
                    "\na/./b.ts\n",
                    "\n#K:URI=\"k\"\n",
                    "\n/a?b\n",
                ][i % 4],
            );
        }
        let run = |classify: &dyn Fn(&[u8; 64]) -> Masks| {
            let mut s = Scan::default();
            assert!(scan_with(text.as_bytes(), &mut s, classify).is_ok());
            (s.starts, s.slow)
        };
        let want = run(&portable);
        assert!(want.1.len() > 100);
        for (name, classify) in classifiers() {
            assert_eq!(run(&classify), want, "{name}");
        }
        let mut s = Scan::default();
        assert!(scan(text.as_bytes(), &mut s).is_ok());
        assert_eq!((s.starts, s.slow), want, "scan");
        // Each variant compiled for its instruction set as a whole loop.
        #[cfg(target_arch = "x86_64")]
        for level in [x86::Level::Avx512, x86::Level::Avx2, x86::Level::Sse2] {
            if !level.available() {
                eprintln!("{level:?}: not on this CPU");
                continue;
            }
            let mut s = Scan::default();
            // SAFETY: the CPU has the level's instructions (checked).
            assert!(unsafe { level.scan(text.as_bytes(), &mut s) }.is_ok());
            assert_eq!((s.starts, s.slow), want, "{level:?}");
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn a_narrower_scan_can_be_asked_for_never_a_wider_one() {
        use x86::Level::*;
        assert_eq!(x86::Level::pick(Avx512, Some("sse2")), Sse2);
        assert_eq!(x86::Level::pick(Avx512, Some("avx2")), Avx2);
        assert_eq!(x86::Level::pick(Avx512, None), Avx512);
        assert_eq!(x86::Level::pick(Avx2, Some("avx512")), Avx2);
        assert_eq!(x86::Level::pick(Sse2, Some("avx2")), Sse2);
        assert_eq!(x86::Level::pick(Avx2, Some("neon")), Avx2);
    }

    #[test]
    fn regions_run_from_start_to_end_across_blocks() {
        let mut borrow = 0;
        // starts at 2 and 10, ends at 5 and (next block) 1
        let r = region((1 << 2) | (1 << 10), 1 << 5, &mut borrow);
        assert_eq!(r, 0b111100 | (u64::MAX << 10));
        assert_eq!(borrow, 1);
        let r = region(0, 1 << 1, &mut borrow);
        assert_eq!(r, 0b11);
        assert_eq!(borrow, 0);
    }

    #[test]
    fn slow_lines_are_found_wherever_they_cross_a_block() {
        let lines = [
            "#EXTINF:2.0,",
            "plain/seg.ts",
            "#EXT-X-KEY:METHOD=AES-128,URI=\"k\"",
            "a/./b.ts",
            "/abs.ts",
            "q.ts?x=1",
            "http://h/x.ts",
            " lead.ts",
            "\rcr",
            "",
            "# comment",
        ];
        let slow_ones = [2, 3, 4, 5, 6, 7, 8];
        for pad in 0..70 {
            let mut text = "x".repeat(pad) + "\n";
            let mut want = Vec::new();
            let mut uri_starts = if pad > 0 { vec![0] } else { vec![] };
            for (i, l) in lines.iter().enumerate() {
                if slow_ones.contains(&i) {
                    want.push(text.len());
                }
                if !l.is_empty() && !l.starts_with('#') {
                    uri_starts.push(text.len());
                }
                text.push_str(l);
                text.push('\n');
            }
            let mut s = Scan::default();
            assert!(scan(text.as_bytes(), &mut s).is_ok());
            assert_eq!(s.slow, want, "pad {pad}");
            let got: Vec<usize> = s
                .starts
                .iter()
                .enumerate()
                .flat_map(|(i, &m)| {
                    (0..64)
                        .filter(move |b| m >> b & 1 == 1)
                        .map(move |b| i * 64 + b)
                })
                .collect();
            assert_eq!(got, uri_starts, "pad {pad}");
        }
    }

    #[test]
    fn a_line_over_the_cap_is_refused_wherever_it_is() {
        for before in [0, 1, 63, 64, 100] {
            let mut text = "a\n".repeat(before);
            text.push_str(&"b".repeat(MAX_LINE));
            text.push('\n');
            let mut s = Scan::default();
            assert!(scan(text.as_bytes(), &mut s).is_ok());
            text.insert(text.len() - 1, 'c');
            let mut s = Scan::default();
            assert!(scan(text.as_bytes(), &mut s).is_err(), "{before}");
        }
    }
}
