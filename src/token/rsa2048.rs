//! RSA-2048 PKCS#1 v1.5 signature checks with the public exponent 65537, on AVX-512 IFMA.
//!
//! A public-key check is `s^65537 mod n`: 16 Montgomery squarings and two multiplications
//! of 2,048-bit numbers. AWS-LC does them with 64-bit `mulx`/`adx` (15.5 µs a check on
//! the Zen 4 machine of `bench/README.md`); IFMA's `vpmadd52luq`/`vpmadd52huq` do eight
//! 52x52-bit products in one instruction, so the same numbers as 40 limbs of 52 bits in five
//! registers take a fraction of that (the method of Gueron and Krasnov, "Accelerating Big
//! Integer Arithmetic Using Intel IFMA Extensions", 2016, as OpenSSL's `rsaz-2k-avx512`
//! uses it for RSA's private operation).
//!
//! Only what a check needs, and nothing secret: the key and the signature are public, so
//! no constant time is needed. The signature is checked as RFC 8017 §8.2.2 asks: the
//! expected encoded message (`00 01 FF..FF 00 DigestInfo hash`) is built from the message
//! and compared with `s^e mod n` as a whole, so no padding is parsed. A signature whose
//! length is not the modulus's or whose value is not below `n` is refused, as AWS-LC
//! refuses it.
//!
//! [`Rsa2048::new`] answers `None` (the caller keeps AWS-LC) unless the CPU has AVX-512F and
//! IFMA, the modulus has exactly 2,048 bits and the exponent is 65537. The arithmetic is
//! tested against `num-bigint` on random and edge-case numbers, the checks against
//! AWS-LC's on keys AWS-LC made and signatures botocore made.

/// Limbs of 52 bits: 40 of them hold 2,080 bits (R = 2^2080 > 4n, the room the
/// "almost Montgomery" product needs to stay below 2n).
const LIMBS: usize = 40;
const MASK: u64 = (1 << 52) - 1;
/// Bytes of a 2,048-bit modulus, and of every signature made with it.
pub const BYTES: usize = 256;

/// Which hash a PKCS#1 v1.5 signature covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hash {
    Sha1,
    Sha256,
}

/// A 2,048-bit RSA public key with e = 65537, ready for IFMA.
#[derive(Clone)]
pub struct Rsa2048 {
    /// The modulus, 52-bit limbs, least significant first.
    n: [u64; LIMBS],
    /// -n^-1 mod 2^52.
    k0: u64,
    /// R^2 mod n, to bring a number into Montgomery form.
    rr: [u64; LIMBS],
}

impl Rsa2048 {
    /// The key (big-endian modulus and exponent, leading zeros allowed), or `None` when
    /// this CPU, this modulus size or this exponent is not one this code is for.
    pub fn new(modulus: &[u8], exponent: &[u8]) -> Option<Rsa2048> {
        if !available() {
            return None;
        }
        Rsa2048::for_any_cpu(modulus, exponent)
    }

    /// [`Rsa2048::new`] without the CPU check (the key's numbers only).
    fn for_any_cpu(modulus: &[u8], exponent: &[u8]) -> Option<Rsa2048> {
        let modulus = strip_zeros(modulus);
        if strip_zeros(exponent) != [1, 0, 1] || modulus.len() != BYTES || modulus[0] < 0x80 {
            return None;
        }
        let n = limbs(modulus.try_into().ok()?);
        if n[0] & 1 == 0 {
            return None;
        }
        // n0^-1 mod 2^64 by Newton's iteration (each step doubles the correct low bits,
        // from 1 bit: any odd number is its own inverse mod 2).
        let mut inv: u64 = 1;
        for _ in 0..6 {
            inv = inv.wrapping_mul(2u64.wrapping_sub(n[0].wrapping_mul(inv)));
        }
        let k0 = inv.wrapping_neg() & MASK;
        // R^2 mod n = 2^4160 mod n, by doubling 1 that many times (once per key).
        let mut rr = [0u64; LIMBS];
        rr[0] = 1;
        for _ in 0..2 * 52 * LIMBS {
            double(&mut rr);
            if !less(&rr, &n) {
                sub(&mut rr, &n);
            }
        }
        Some(Rsa2048 { n, k0, rr })
    }

    /// `s^65537 mod n` as 256 big-endian bytes, or `None` when `s` is not 256 bytes or not
    /// below `n`.
    pub fn public_op(&self, signature: &[u8]) -> Option<[u8; BYTES]> {
        let s = limbs(signature.try_into().ok()?);
        if !less(&s, &self.n) {
            return None;
        }
        // SAFETY: `Rsa2048` is made only by `new`, which checked the CPU has AVX-512F and
        // IFMA, or by the tests' `for_any_cpu` (their callers check `available()`).
        let x = unsafe { pow65537(&s, &self.n, &self.rr, self.k0) };
        Some(bytes(&below(x, &self.n)))
    }

    /// Whether `signature` is a PKCS#1 v1.5 signature of `message` under this key.
    pub fn verify(&self, hash: Hash, message: &[u8], signature: &[u8]) -> bool {
        let Some(em) = self.public_op(signature) else {
            return false;
        };
        use aws_lc_rs::digest;
        let (prefix, digest): (&[u8], _) = match hash {
            Hash::Sha1 => (
                &SHA1_INFO,
                digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, message),
            ),
            Hash::Sha256 => (&SHA256_INFO, digest::digest(&digest::SHA256, message)),
        };
        let t = digest.as_ref();
        let pad = BYTES - 3 - prefix.len() - t.len();
        let mut want = [0xFFu8; BYTES];
        want[0] = 0;
        want[1] = 1;
        want[2 + pad] = 0;
        want[3 + pad..3 + pad + prefix.len()].copy_from_slice(prefix);
        want[BYTES - t.len()..].copy_from_slice(t);
        em == want
    }
}

/// DER `DigestInfo` prefixes (RFC 8017 §9.2, note 1).
const SHA1_INFO: [u8; 15] = [
    0x30, 0x21, 0x30, 0x09, 0x06, 0x05, 0x2b, 0x0e, 0x03, 0x02, 0x1a, 0x05, 0x00, 0x04, 0x14,
];
const SHA256_INFO: [u8; 19] = [
    0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05,
    0x00, 0x04, 0x20,
];

/// Whether this CPU can run the IFMA code.
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512ifma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

fn strip_zeros(b: &[u8]) -> &[u8] {
    let first = b.iter().position(|&x| x != 0).unwrap_or(b.len());
    &b[first..]
}

/// 256 big-endian bytes as 52-bit limbs, least significant first.
fn limbs(be: &[u8; BYTES]) -> [u64; LIMBS] {
    let mut le = [0u8; BYTES + 8];
    for (d, s) in le.iter_mut().zip(be.iter().rev()) {
        *d = *s;
    }
    let mut out = [0u64; LIMBS];
    for (j, l) in out.iter_mut().enumerate() {
        let bit = 52 * j;
        let word = u64::from_le_bytes(le[bit / 8..bit / 8 + 8].try_into().unwrap());
        *l = (word >> (bit % 8)) & MASK;
    }
    out
}

/// Limbs (the value below 2^2048) as 256 big-endian bytes.
fn bytes(x: &[u64; LIMBS]) -> [u8; BYTES] {
    let mut le = [0u8; BYTES];
    let (mut acc, mut bits, mut at) = (0u128, 0, 0);
    for &l in x {
        acc |= u128::from(l) << bits;
        bits += 52;
        while bits >= 8 && at < BYTES {
            le[at] = acc as u8;
            acc >>= 8;
            bits -= 8;
            at += 1;
        }
    }
    le.reverse();
    le
}

/// a < b, both with limbs below 2^52.
fn less(a: &[u64; LIMBS], b: &[u64; LIMBS]) -> bool {
    for j in (0..LIMBS).rev() {
        if a[j] != b[j] {
            return a[j] < b[j];
        }
    }
    false
}

/// x mod n, for x below 2n. (The last product is below n(1 + 2n/R), so this is needed
/// about once in 2^31 checks.)
fn below(mut x: [u64; LIMBS], n: &[u64; LIMBS]) -> [u64; LIMBS] {
    if !less(&x, n) {
        sub(&mut x, n);
    }
    x
}

/// a -= b, for a >= b.
fn sub(a: &mut [u64; LIMBS], b: &[u64; LIMBS]) {
    let mut borrow = 0u64;
    for j in 0..LIMBS {
        let d = a[j].wrapping_sub(b[j]).wrapping_sub(borrow);
        borrow = d >> 63;
        a[j] = d & MASK;
    }
}

/// a *= 2 (a below 2^2079).
fn double(a: &mut [u64; LIMBS]) {
    let mut carry = 0;
    for l in a.iter_mut() {
        let d = (*l << 1) | carry;
        carry = d >> 52;
        *l = d & MASK;
    }
}

/// s^65537 mod n, below 2n: s into Montgomery form (s·R), 16 squarings (s^65536·R), then
/// one product with s itself, which takes the R out on the way (s^65537).
///
/// # Safety
/// The CPU must have AVX-512F and AVX-512 IFMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512ifma")]
unsafe fn pow65537(s: &[u64; LIMBS], n: &[u64; LIMBS], rr: &[u64; LIMBS], k0: u64) -> [u64; LIMBS] {
    let mut x = amm(s, rr, n, k0);
    for _ in 0..16 {
        x = amm(&x, &x, n, k0);
    }
    amm(&x, s, n, k0)
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn pow65537(_: &[u64; LIMBS], _: &[u64; LIMBS], _: &[u64; LIMBS], _: u64) -> [u64; LIMBS] {
    unreachable!("Rsa2048::new answers None off x86-64")
}

/// The "almost Montgomery" product a·b·R^-1 mod n, below 2n for a, b below 2n, with limbs
/// below 2^52 in and out.
///
/// Word by word over b: the accumulator gets a·b_i's low halves, then m·n's, m chosen so its
/// lowest limb becomes 0 mod 2^52; it moves down one limb (its lowest limb's carry going
/// into the next); then the high halves of both products, which belong one limb up, go in
/// where they now are. Limbs are left unnormalised inside the loop: each gets at most four
/// 52-bit terms and a carry per round, far below 2^64 in 40 rounds.
///
/// # Safety
/// The CPU must have AVX-512F and AVX-512 IFMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512ifma")]
unsafe fn amm(a: &[u64; LIMBS], b: &[u64; LIMBS], n: &[u64; LIMBS], k0: u64) -> [u64; LIMBS] {
    use std::arch::x86_64::*;
    const V: usize = LIMBS / 8;
    // SAFETY (the loads and the store): each of the five vectors is 8 of the 40 u64s.
    let load = |p: &[u64; LIMBS], k: usize| unsafe {
        _mm512_loadu_si512(p.as_ptr().add(8 * k).cast::<__m512i>())
    };
    let av: [__m512i; V] = std::array::from_fn(|k| load(a, k));
    let nv: [__m512i; V] = std::array::from_fn(|k| load(n, k));
    let zero = _mm512_setzero_si512();
    let mut acc = [zero; V];
    for &bi in b {
        let bv = _mm512_set1_epi64(bi as i64);
        for k in 0..V {
            acc[k] = _mm512_madd52lo_epu64(acc[k], av[k], bv);
        }
        let t = _mm_cvtsi128_si64(_mm512_castsi512_si128(acc[0])) as u64;
        let m = t.wrapping_mul(k0) & MASK;
        let mv = _mm512_set1_epi64(m as i64);
        for k in 0..V {
            acc[k] = _mm512_madd52lo_epu64(acc[k], nv[k], mv);
        }
        // The lowest limb is now 0 mod 2^52; what is above it moves into the next.
        let carry = (t + (n[0].wrapping_mul(m) & MASK)) >> 52;
        for k in 0..V - 1 {
            acc[k] = _mm512_alignr_epi64::<1>(acc[k + 1], acc[k]);
        }
        acc[V - 1] = _mm512_alignr_epi64::<1>(zero, acc[V - 1]);
        acc[0] = _mm512_add_epi64(acc[0], _mm512_maskz_set1_epi64(1, carry as i64));
        for k in 0..V {
            acc[k] = _mm512_madd52hi_epu64(acc[k], av[k], bv);
            acc[k] = _mm512_madd52hi_epu64(acc[k], nv[k], mv);
        }
    }
    let mut out = [0u64; LIMBS];
    for (k, v) in acc.iter().enumerate() {
        // SAFETY: see `load`.
        unsafe { _mm512_storeu_si512(out.as_mut_ptr().add(8 * k).cast::<__m512i>(), *v) };
    }
    let mut carry = 0;
    for l in out.iter_mut() {
        let v = *l + carry;
        *l = v & MASK;
        carry = v >> 52;
    }
    debug_assert_eq!(carry, 0, "the product is below 2n < 2^2080");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use num_bigint::BigUint;

    /// A deterministic stream of bytes (xorshift), so a failure can be replayed.
    struct Bytes(u64);
    impl Bytes {
        fn fill(&mut self, out: &mut [u8]) {
            for b in out {
                self.0 ^= self.0 << 13;
                self.0 ^= self.0 >> 7;
                self.0 ^= self.0 << 17;
                *b = (self.0 >> 24) as u8;
            }
        }
    }

    /// Big-endian, left-padded to 256 bytes (longer when the number is).
    fn be(x: &BigUint) -> Vec<u8> {
        let v = x.to_bytes_be();
        let mut out = vec![0u8; BYTES.saturating_sub(v.len())];
        out.extend_from_slice(&v);
        out
    }

    const E: [u8; 3] = [1, 0, 1];

    /// The moduli the tests use: random odd 2,048-bit ones and the extremes (all ones; the
    /// top bit alone plus one; limbs of all ones and of zeros).
    fn moduli(rng: &mut Bytes, random: usize) -> Vec<[u8; BYTES]> {
        let mut out = vec![[0xFF; BYTES]];
        let mut low = [0u8; BYTES];
        low[0] = 0x80;
        low[BYTES - 1] = 1;
        out.push(low);
        let mut stripes = [0u8; BYTES];
        for (i, b) in stripes.iter_mut().enumerate() {
            *b = if (i / 13) % 2 == 0 { 0xFF } else { 0 };
        }
        stripes[0] |= 0x80;
        stripes[BYTES - 1] |= 1;
        out.push(stripes);
        for _ in 0..random {
            let mut n = [0u8; BYTES];
            rng.fill(&mut n);
            n[0] |= 0x80;
            n[BYTES - 1] |= 1;
            out.push(n);
        }
        out
    }

    #[test]
    fn the_public_operation_agrees_with_num_bigint() {
        if !available() {
            // This CPU runs AWS-LC (the `cloudfront` tests check that path); the arithmetic
            // cannot run here.
            assert!(Rsa2048::new(&[0xFF; BYTES], &E).is_none());
            return;
        }
        let mut rng = Bytes(0x9E37_79B9_7F4A_7C15);
        let e = BigUint::from(65537u32);
        for n in moduli(&mut rng, 40) {
            let key = Rsa2048::new(&n, &E).expect("a 2,048-bit odd modulus, e = 65537");
            let big_n = BigUint::from_bytes_be(&n);
            let one = BigUint::from(1u8);
            let mut cases = vec![
                BigUint::from(0u8),
                one.clone(),
                BigUint::from(2u8),
                &big_n - &one,
                &big_n - BigUint::from(2u8),
                BigUint::from_bytes_be(&[0xFF; 200]),
            ];
            for _ in 0..10 {
                let mut s = [0u8; BYTES];
                rng.fill(&mut s);
                cases.push(BigUint::from_bytes_be(&s) % &big_n);
            }
            for s in cases {
                let want = be(&s.modpow(&e, &big_n));
                assert_eq!(
                    key.public_op(&be(&s)).map(Vec::from),
                    Some(want),
                    "n = {big_n:x}, s = {s:x}"
                );
            }
            // Not below n: refused, as AWS-LC refuses it.
            assert_eq!(key.public_op(&n), None);
            assert_eq!(key.public_op(&be(&(&big_n + &one))), None);
            assert_eq!(key.public_op(&[0xFF; BYTES]), None);
            // Not the modulus's length.
            assert_eq!(key.public_op(&n[1..]), None);
            assert_eq!(key.public_op(&[0; BYTES + 1]), None);
        }
    }

    #[test]
    fn only_2048_bit_odd_moduli_with_exponent_65537() {
        let mut n = [0xABu8; BYTES];
        n[BYTES - 1] |= 1;
        assert!(Rsa2048::for_any_cpu(&n, &E).is_some());
        // Leading zeros are fine.
        let mut padded = vec![0u8; 1];
        padded.extend_from_slice(&n);
        assert!(Rsa2048::for_any_cpu(&padded, &[0, 1, 0, 1]).is_some());
        assert!(Rsa2048::for_any_cpu(&n, &[3]).is_none());
        assert!(Rsa2048::for_any_cpu(&n, &[1, 0, 0, 1]).is_none());
        assert!(Rsa2048::for_any_cpu(&n[1..], &E).is_none()); // 2,040 bits
        let mut big = vec![1u8];
        big.extend_from_slice(&n);
        assert!(Rsa2048::for_any_cpu(&big, &E).is_none()); // 2,049 bits
        let mut short = n;
        short[0] = 0x7F; // 2,047 bits
        assert!(Rsa2048::for_any_cpu(&short, &E).is_none());
        let mut even = n;
        even[BYTES - 1] &= !1;
        assert!(Rsa2048::for_any_cpu(&even, &E).is_none());
    }

    #[test]
    fn the_last_product_is_brought_below_n() {
        let mut rng = Bytes(11);
        for _ in 0..20 {
            let (mut n, mut k) = ([0u8; BYTES], [0u8; 8]);
            rng.fill(&mut n);
            rng.fill(&mut k);
            n[0] = (n[0] & 0x3F) | 0x80; // n + k stays below 2^2048
            let (big_n, k) = (BigUint::from_bytes_be(&n), BigUint::from_bytes_be(&k));
            let n = limbs(&n);
            let over = limbs(&be(&(&big_n + &k)).try_into().unwrap());
            assert_eq!(bytes(&below(over, &n)).to_vec(), be(&k));
            let under = limbs(&be(&(&big_n - &k)).try_into().unwrap());
            assert_eq!(below(under, &n), under);
        }
    }

    #[test]
    fn limbs_and_bytes_round_trip() {
        let mut rng = Bytes(7);
        for _ in 0..100 {
            let mut x = [0u8; BYTES];
            rng.fill(&mut x);
            assert_eq!(bytes(&limbs(&x)), x);
            assert!(limbs(&x).iter().all(|&l| l <= MASK));
        }
    }
}
