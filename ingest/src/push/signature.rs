//! Webhook signatures, checked in constant time before parsing: `base64(HMAC-SHA256(raw body,
//! secret))` (Shopify, 3PL, AfterShip) and `hex(SHA256(raw body + "/" + key))` (17TRACK).

use base64::Engine;
use base64::prelude::BASE64_STANDARD;
use hmac::{KeyInit, Mac};

use crate::pull::secret::Secret;

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// Why a signature was refused; each is a 401 and a `rejected` reason label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureError {
    /// The header is absent.
    Missing,
    /// The header is not base64 of 32 bytes.
    Malformed,
    /// The header does not match the body (wrong secret, or the body was altered).
    Mismatch,
}

impl SignatureError {
    /// The metrics reason label.
    pub fn reason(&self) -> &'static str {
        match self {
            SignatureError::Missing => "signature_missing",
            SignatureError::Malformed => "signature_malformed",
            SignatureError::Mismatch => "signature_mismatch",
        }
    }
}

fn mac(secret: &Secret, body: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length, so this cannot fail.
    let mut mac =
        HmacSha256::new_from_slice(secret.expose().as_bytes()).expect("HMAC accepts any key");
    mac.update(body);
    mac
}

/// Checks `header` (the base64 signature as received) against `body`. The comparison is
/// `Mac::verify_slice`, constant time in the tag's content.
pub fn verify(secret: &Secret, body: &[u8], header: Option<&[u8]>) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    let tag = BASE64_STANDARD
        .decode(header.trim_ascii())
        .map_err(|_| SignatureError::Malformed)?;
    if tag.len() != 32 {
        return Err(SignatureError::Malformed);
    }
    mac(secret, body)
        .verify_slice(&tag)
        .map_err(|_| SignatureError::Mismatch)
}

/// The signature a sender computes for `body`; for tests and tools that replay fixtures.
pub fn sign(secret: &Secret, body: &[u8]) -> String {
    BASE64_STANDARD.encode(mac(secret, body).finalize().into_bytes())
}

/// Checks a lower- or upper-case hex `SHA256(body + "/" + key)` (17TRACK's push signature)
/// against `body`, comparing the 32 digest bytes in constant time.
pub fn verify_sha256_hex_suffixed(
    secret: &Secret,
    body: &[u8],
    header: Option<&[u8]>,
) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?.trim_ascii();
    if header.len() != 64 {
        return Err(SignatureError::Malformed);
    }
    let mut tag = [0u8; 32];
    for (i, pair) in header.chunks(2).enumerate() {
        let digits = std::str::from_utf8(pair).map_err(|_| SignatureError::Malformed)?;
        tag[i] = u8::from_str_radix(digits, 16).map_err(|_| SignatureError::Malformed)?;
    }
    let digest = sha256_suffixed(secret, body);
    // Fold every byte's difference so the time does not depend on where they differ.
    let diff = digest
        .iter()
        .zip(tag)
        .fold(0u8, |acc, (a, b)| acc | (a ^ b));
    if diff == 0 {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

fn sha256_suffixed(secret: &Secret, body: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(body);
    h.update(b"/");
    h.update(secret.expose().as_bytes());
    h.finalize().into()
}

/// The lower-case hex `SHA256(body + "/" + key)` a 17TRACK push carries; for tests and tools.
pub fn sign_sha256_hex_suffixed(secret: &Secret, body: &[u8]) -> String {
    sha256_suffixed(secret, body)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_known_vector_matches() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        let s = Secret::new("Jefe");
        let sig = sign(&s, b"what do ya want for nothing?");
        assert_eq!(sig, "W9zBRr9gdU5qBCQmCJV1x1oAPwidJzmDnexYuWTsOEM=");
        assert_eq!(
            verify(&s, b"what do ya want for nothing?", Some(sig.as_bytes())),
            Ok(())
        );
    }

    #[test]
    fn missing_malformed_and_mismatched_are_told_apart() {
        let s = Secret::new("k");
        assert_eq!(verify(&s, b"x", None), Err(SignatureError::Missing));
        assert_eq!(
            verify(&s, b"x", Some(b"not base64!")),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            verify(&s, b"x", Some(b"c2hvcnQ=")),
            Err(SignatureError::Malformed)
        );
        let other = sign(&Secret::new("other"), b"x");
        assert_eq!(
            verify(&s, b"x", Some(other.as_bytes())),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn a_known_suffixed_sha256_matches() {
        // sha256("{}/key"), computed by hand with `printf '{}/key' | sha256sum`.
        let s = Secret::new("key");
        let sig = sign_sha256_hex_suffixed(&s, b"{}");
        assert_eq!(
            sig,
            "461a224c100d7b686157238995a9c7bd82a226ec5c8e51a4aa00518eb432f61f"
        );
        assert_eq!(
            verify_sha256_hex_suffixed(&s, b"{}", Some(sig.as_bytes())),
            Ok(())
        );
        assert_eq!(
            verify_sha256_hex_suffixed(&s, b"{}", Some(sig.to_uppercase().as_bytes())),
            Ok(())
        );
        assert_eq!(
            verify_sha256_hex_suffixed(&s, b"{} ", Some(sig.as_bytes())),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_sha256_hex_suffixed(&s, b"{}", Some(b"zz")),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            verify_sha256_hex_suffixed(&s, b"{}", None),
            Err(SignatureError::Missing)
        );
    }

    proptest! {
        #[test]
        fn any_flipped_bit_in_the_body_is_refused(
            body in proptest::collection::vec(any::<u8>(), 1..256),
            at in any::<prop::sample::Index>(),
            bit in 0u8..8,
        ) {
            let s = Secret::new("shpss_test");
            let sig = sign(&s, &body);
            prop_assert_eq!(verify(&s, &body, Some(sig.as_bytes())), Ok(()));
            let mut tampered = body.clone();
            let i = at.index(tampered.len());
            tampered[i] ^= 1 << bit;
            prop_assert_eq!(
                verify(&s, &tampered, Some(sig.as_bytes())),
                Err(SignatureError::Mismatch)
            );
        }
    }
}
