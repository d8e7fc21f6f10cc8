//! HMAC-SHA256 (RFC 2104) for the per-request token check, with the key's inner and outer
//! pads hashed once when the key is loaded and SHA-256's compression function called
//! directly (`sha2::compress256`: the CPU's SHA extensions where it has them, detected at
//! run time). A token's MAC input is one block, so a verification costs two compressions
//! and no allocation, buffer copy or per-call key set-up (ring's `hmac::Context` costs
//! about twice that here: see bench/README.md). Checked against ring's HMAC in the tests.

const BLOCK: usize = 64;
/// SHA-256's initial state (FIPS 180-4 §5.3.3).
const H0: [u32; 8] = [
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
];

#[derive(Clone)]
pub struct HmacSha256 {
    /// The state after the key XOR ipad block, and after the key XOR opad block.
    inner: [u32; 8],
    outer: [u32; 8],
}

fn compress(state: &mut [u32; 8], block: &[u8; BLOCK]) {
    // (`into`: generic-array 0.14.8+ deprecates naming its type; the conversion is free.)
    sha2::compress256(state, &[(*block).into()]);
}

/// The last block(s) of a message whose final `rest` bytes (< 64) are in `buf[..rest]` and
/// whose total length is `total` bytes: padding and the bit length, compressed.
fn finish(state: &mut [u32; 8], mut buf: [u8; BLOCK], rest: usize, total: u64) {
    buf[rest] = 0x80;
    buf[rest + 1..].fill(0);
    if rest + 1 > BLOCK - 8 {
        compress(state, &buf);
        buf = [0; BLOCK];
    }
    buf[BLOCK - 8..].copy_from_slice(&(total * 8).to_be_bytes());
    compress(state, &buf);
}

fn digest_bytes(state: &[u32; 8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (o, w) in out.chunks_exact_mut(4).zip(state) {
        o.copy_from_slice(&w.to_be_bytes());
    }
    out
}

impl HmacSha256 {
    pub fn new(key: &[u8]) -> HmacSha256 {
        let mut k = [0u8; BLOCK];
        if key.len() > BLOCK {
            let mut s = H0;
            let mut buf = [0u8; BLOCK];
            let mut chunks = key.chunks_exact(BLOCK);
            for c in chunks.by_ref() {
                compress(&mut s, c.try_into().expect("a block"));
            }
            let rest = chunks.remainder();
            buf[..rest.len()].copy_from_slice(rest);
            finish(&mut s, buf, rest.len(), key.len() as u64);
            k[..32].copy_from_slice(&digest_bytes(&s));
        } else {
            k[..key.len()].copy_from_slice(key);
        }
        let mut inner = H0;
        compress(&mut inner, &k.map(|b| b ^ 0x36));
        let mut outer = H0;
        compress(&mut outer, &k.map(|b| b ^ 0x5c));
        HmacSha256 { inner, outer }
    }

    /// The MAC of the concatenation of `parts`.
    pub fn mac(&self, parts: &[&[u8]]) -> [u8; 32] {
        let mut s = self.inner;
        let mut buf = [0u8; BLOCK];
        let mut fill = 0;
        let mut total = BLOCK as u64;
        for p in parts {
            total += p.len() as u64;
            let mut p = *p;
            if fill > 0 {
                let n = p.len().min(BLOCK - fill);
                buf[fill..fill + n].copy_from_slice(&p[..n]);
                fill += n;
                p = &p[n..];
                if fill < BLOCK {
                    continue;
                }
                compress(&mut s, &buf);
            }
            let mut chunks = p.chunks_exact(BLOCK);
            for c in chunks.by_ref() {
                compress(&mut s, c.try_into().expect("a block"));
            }
            let rest = chunks.remainder();
            buf[..rest.len()].copy_from_slice(rest);
            fill = rest.len();
        }
        finish(&mut s, buf, fill, total);
        let mut o = self.outer;
        let mut block = [0u8; BLOCK];
        block[..32].copy_from_slice(&digest_bytes(&s));
        finish(&mut o, block, 32, (BLOCK + 32) as u64);
        digest_bytes(&o)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::hmac;

    #[test]
    fn agrees_with_ring_for_every_length_split_and_key_size() {
        let data: Vec<u8> = (0..300u32).map(|i| (i * 7 + 3) as u8).collect();
        for key_len in [0, 1, 32, 63, 64, 65, 100, 200] {
            let key: Vec<u8> = (0..key_len).map(|i| (i * 13 + 1) as u8).collect();
            let ours = HmacSha256::new(&key);
            let theirs = hmac::Key::new(hmac::HMAC_SHA256, &key);
            for len in 0..data.len() {
                let msg = &data[..len];
                let want = hmac::sign(&theirs, msg);
                assert_eq!(
                    &ours.mac(&[msg])[..],
                    want.as_ref(),
                    "key {key_len} len {len}"
                );
                // The same message in parts, split anywhere.
                let (a, b) = msg.split_at(len / 3);
                let (b, c) = b.split_at(b.len() / 2);
                assert_eq!(&ours.mac(&[a, b, &[], c])[..], want.as_ref(), "parts {len}");
            }
        }
    }

    #[test]
    fn rfc_4231_test_case_2() {
        let mac = HmacSha256::new(b"Jefe").mac(&[b"what do ya want ", b"for nothing?"]);
        let want = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843";
        let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, want);
    }
}
