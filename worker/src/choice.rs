//! Which horoscope a prefix gets.
//!
//! Read the 32-byte blake3 digest of the prefix's UTF-8 bytes as one
//! big-endian unsigned integer `n`; the sign is `Sign::ALL[n mod 12]` and the
//! text is that sign's texts `[n mod count]`, in corpus order. Same prefix,
//! same corpus: same text, on any worker, in any language.

use crate::corpus::{Corpus, Sign};
use std::sync::Arc;

/// The horoscope for `prefix`: its sign and its text.
pub fn choose(corpus: &Corpus, prefix: &str) -> (Sign, Arc<str>) {
    let digest = blake3::hash(prefix.as_bytes());
    let sign = Sign::ALL[digest_mod(digest.as_bytes(), 12) as usize];
    let texts = corpus.texts(sign);
    let index = digest_mod(digest.as_bytes(), texts.len() as u64) as usize;
    (sign, texts[index].clone())
}

/// The digest, read as a big-endian unsigned integer, modulo `m` (`m > 0`).
pub fn digest_mod(digest: &[u8; 32], m: u64) -> u64 {
    let m = u128::from(m);
    let rest = digest
        .iter()
        .fold(0u128, |rest, &byte| ((rest << 8) | u128::from(byte)) % m);
    rest as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The README's vectors: prefix, digest prefix in hex, n mod 12, 30, 37.
    const VECTORS: [(&str, &str, u64, u64, u64); 6] = [
        ("", "af1349b9f5f9a1a6", 10, 28, 19),
        ("hello", "ea8f163db3868292", 3, 21, 8),
        ("Hello", "fbc2b0516ee8744d", 7, 13, 0),
        ("aries", "e51c2c9e1daa538b", 0, 6, 32),
        ("Вы многое принимаете", "0d89dd21cdf7141f", 10, 4, 32),
        ("🦀 rust", "06a33e6466563bff", 3, 3, 33),
    ];

    fn check(prefix: &str, digest_hex: &str, m12: u64, m30: u64, m37: u64) {
        let digest = blake3::hash(prefix.as_bytes());
        assert!(digest.to_hex().starts_with(digest_hex), "{prefix:?}");
        assert_eq!(digest_mod(digest.as_bytes(), 12), m12, "{prefix:?} mod 12");
        assert_eq!(digest_mod(digest.as_bytes(), 30), m30, "{prefix:?} mod 30");
        assert_eq!(digest_mod(digest.as_bytes(), 37), m37, "{prefix:?} mod 37");
    }

    #[test]
    fn matches_the_design_vectors() {
        for (prefix, digest_hex, m12, m30, m37) in VECTORS {
            check(prefix, digest_hex, m12, m30, m37);
        }
        check(&"x".repeat(1024), "71c7a224be567fb9", 4, 22, 17);
    }

    #[test]
    fn reduces_the_whole_digest_not_its_low_bytes() {
        let mut digest = [0u8; 32];
        digest[0] = 1; // n = 2^248
        // 2^248 mod 7 = 2^(248 mod 3) = 2^2 = 4, since 2^3 = 8 ≡ 1 (mod 7).
        assert_eq!(digest_mod(&digest, 7), 4);
        // 2^256 - 1 = (2^64)^4 - 1 and 2^64 ≡ 1 (mod 2^64 - 1), so it is ≡ 0.
        assert_eq!(digest_mod(&[0xff; 32], u64::MAX), 0);
    }

    #[test]
    fn picks_the_sign_then_the_text_in_corpus_order() {
        let corpus = Corpus::built_in();
        // "hello": n mod 12 = 3, so CANCER.
        let (sign, text) = choose(&corpus, "hello");
        assert_eq!(sign, Sign::Cancer);
        let texts = corpus.texts(Sign::Cancer);
        let digest = blake3::hash(b"hello");
        let index = digest_mod(digest.as_bytes(), texts.len() as u64) as usize;
        assert_eq!(text, texts[index]);
    }

    #[test]
    fn golden_texts_of_the_built_in_corpus() {
        let corpus = Corpus::built_in();
        for (prefix, sign, text) in GOLDEN {
            let (got_sign, got_text) = choose(&corpus, prefix);
            assert_eq!(got_sign.name(), sign, "{prefix:?}");
            assert_eq!(&*got_text, text, "{prefix:?}");
        }
    }

    /// Fixed prefixes and the text they get from the built-in corpus. A change
    /// here changes what every client sees: it is a breaking change.
    const GOLDEN: [(&str, &str, &str); 6] = [
        (
            "",
            "AQUARIUS",
            "Your future focused mind sees trends before others. Share your predictions and plan accordingly. Being ahead of the curve gives you a real advantage. An early night sets up a bright morning.",
        ),
        (
            "hello",
            "CANCER",
            "Money arrives from an unexpected direction, perhaps a refund or a forgotten account. Tuck it away for a rainy day, and feel the comfort of a stronger safety net.",
        ),
        (
            "aries",
            "ARIES",
            "You are at your best when you lead by example rather than by volume. Show the team how it is done, then step back and let them surprise you with their own approach.",
        ),
        (
            "Вы многое принимаете",
            "AQUARIUS",
            "You feel detached from your emotions. Take time to check in with yourself. Journaling or a quiet walk helps you reconnect with what you truly feel inside.",
        ),
        (
            "🦀 rust",
            "CANCER",
            "A memory returns with surprising force. Let it teach you something about what you want now rather than pulling you back into the past. Then set it gently aside.",
        ),
        (
            "What does my week look like?",
            "ARIES",
            "Patience is not your favourite virtue, but it pays handsomely right now. Let a negotiation run its course instead of forcing a close. The better offer is still on its way.",
        ),
    ];
}
