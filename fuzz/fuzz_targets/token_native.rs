//! The edge's own tokens: any string the fuzzer makes is refused (it holds no key); a
//! token issued from fuzzed fields verifies for its viewer and stream, and the same token
//! with any one character changed does not.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use hlsgate::token::{Binding, Grant, Keyring, Viewer};
use libfuzzer_sys::fuzz_target;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::LazyLock;

static KEYRING: LazyLock<Keyring> = LazyLock::new(|| {
    Keyring::from_text(
        "7 AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4v\n\
         3 ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj9AQUJDREVGR0hJSktMTU5P\n",
    )
    .unwrap()
});

#[derive(Arbitrary, Debug)]
struct Input {
    token: String,
    stream: String,
    session: [u8; 16],
    exp: u32,
    session_exp: u32,
    ip: Option<(bool, u128, u8)>,
    ua: Option<String>,
    stored: bool,
    exchanged: bool,
    now: u32,
    flip_at: u16,
    flip_to: u8,
}

fuzz_target!(|data: &[u8]| {
    let Ok(i) = Input::arbitrary(&mut Unstructured::new(data)) else {
        return;
    };
    let ip = |v6: bool, n: u128| -> IpAddr {
        if v6 {
            IpAddr::V6(Ipv6Addr::from(n))
        } else {
            IpAddr::V4(Ipv4Addr::from(n as u32))
        }
    };
    let peer =
        i.ip.map_or(IpAddr::V4(Ipv4Addr::LOCALHOST), |(v6, n, _)| ip(v6, n));
    let ua = i.ua.as_deref().unwrap_or("");
    let viewer = Viewer {
        stream: &i.stream,
        ip: peer,
        ua,
        now: i.now,
    };
    // Arbitrary text: never a valid token.
    assert!(
        KEYRING.verify(&i.token, &viewer).is_err(),
        "a fuzzed string verified"
    );

    if i.stream.is_empty() || i.stream.len() > 64 {
        return;
    }
    let grant = Grant {
        stream: i.stream.clone(),
        session: i.session,
        exp: i.exp,
        session_exp: i.session_exp.max(i.exp),
        binding: Binding {
            ip: i
                .ip
                .map(|(v6, n, p)| (ip(v6, n), if v6 { p % 129 } else { p % 33 })),
            ua: i.ua.clone(),
        },
        stored_session: i.stored,
        exchanged: i.exchanged,
    };
    let token = KEYRING.issue(&grant);
    let now = i.exp.saturating_sub(1 + u32::from(i.flip_to % 8));
    let viewer = Viewer {
        stream: &i.stream,
        ip: peer,
        ua,
        now,
    };
    let v = KEYRING
        .verify(&token, &viewer)
        .expect("an issued token verifies for its viewer");
    assert_eq!((v.session, v.exp), (grant.session, grant.exp));
    assert_eq!((v.stored_session(), v.exchanged()), (i.stored, i.exchanged));
    // Another stream.
    let other = format!("{}x", i.stream);
    assert!(KEYRING
        .verify(
            &token,
            &Viewer {
                stream: &other,
                ..viewer
            }
        )
        .is_err());
    // One character changed.
    let mut bytes = token.clone().into_bytes();
    let at = usize::from(i.flip_at) % bytes.len();
    const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let to = B64[usize::from(i.flip_to) % 64];
    if bytes[at] != to {
        bytes[at] = to;
        let changed = String::from_utf8(bytes).unwrap();
        assert!(
            KEYRING.verify(&changed, &viewer).is_err(),
            "a changed token verified"
        );
    }
});
