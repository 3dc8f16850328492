//! The webhook signature: `x-reten-signature: t=<unix>,v1=<hex>`, where the
//! hex is HMAC-SHA256 of `"<t>.<body>"` under the config's signing secret.
//! The timestamp inside the signed text lets a receiver refuse replays.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The header that carries the signature.
pub const SIGNATURE_HEADER: &str = "x-reten-signature";

/// The `x-reten-signature` value for `body` sent at `unix` seconds.
pub fn signature(secret: &[u8], unix: i64, body: &[u8]) -> String {
    format!("t={unix},v1={}", hex::encode(mac(secret, unix, body)))
}

fn mac(secret: &[u8], unix: i64, body: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes a key of any length");
    mac.update(unix.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.finalize().into_bytes().to_vec()
}

/// What a receiver does: whether `header` signs `body` under `secret`, sent
/// no more than `tolerance_secs` from `now_unix`. Compared in constant time.
pub fn verify(secret: &[u8], header: &str, body: &[u8], now_unix: i64, tolerance_secs: i64) -> bool {
    let mut t = None;
    let mut v1 = None;
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", value)) => t = value.parse::<i64>().ok(),
            Some(("v1", value)) => v1 = hex::decode(value).ok(),
            _ => {}
        }
    }
    let (Some(t), Some(v1)) = (t, v1) else { return false };
    if (now_unix - t).abs() > tolerance_secs {
        return false;
    }
    let mut check = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes a key of any length");
    check.update(t.to_string().as_bytes());
    check.update(b".");
    check.update(body);
    check.verify_slice(&v1).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_verifies_only_for_its_body_secret_and_time() {
        let header = signature(b"whsec", 1_700_000_000, b"{\"a\":1}");
        assert!(header.starts_with("t=1700000000,v1="));
        assert!(verify(b"whsec", &header, b"{\"a\":1}", 1_700_000_010, 300));
        assert!(!verify(b"whsec", &header, b"{\"a\":2}", 1_700_000_010, 300));
        assert!(!verify(b"other", &header, b"{\"a\":1}", 1_700_000_010, 300));
        assert!(!verify(b"whsec", &header, b"{\"a\":1}", 1_700_001_000, 300), "too old");
        assert!(!verify(b"whsec", "t=1,v1=zz", b"", 1, 300));
    }
}
