//! `base64(HMAC-SHA256(raw body, secret))` signatures, checked in constant time before parsing.

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
