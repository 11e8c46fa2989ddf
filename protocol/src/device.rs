//! Device identity: a hardware device's stable name, derived from its
//! Ed25519 public key so no other key can claim it. The device agent
//! announces it, the node checks a link's registration against it, and a
//! draw's entropy record names the devices it used by it.

use std::fmt;
use std::str::FromStr;

use ed25519_dalek::VerifyingKey;
use sha2::{Digest, Sha256};

/// Bytes of SHA-256 kept in a device id.
pub const DEVICE_ID_LEN: usize = 16;

/// A device's stable name, derived from its public key so it cannot be
/// claimed by another key. Text form: `dev_` and 32 lowercase hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeviceId(pub [u8; DEVICE_ID_LEN]);

impl DeviceId {
    /// The id of the device whose Ed25519 public key is `key`.
    pub fn of(key: &VerifyingKey) -> Self {
        Self::of_key_bytes(key.as_bytes())
    }

    /// The id that belongs to the public key bytes `key`: the first
    /// [`DEVICE_ID_LEN`] bytes of their SHA-256. The node checks a link's
    /// registration against it; the ledger stores links under it.
    pub fn of_key_bytes(key: &[u8; 32]) -> Self {
        let digest = Sha256::digest(key);
        let mut id = [0u8; DEVICE_ID_LEN];
        id.copy_from_slice(&digest[..DEVICE_ID_LEN]);
        DeviceId(id)
    }
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "dev_{}", hex::encode(self.0))
    }
}

/// A device id text that is not `dev_` and 32 lowercase hex digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a device id is `dev_` followed by 32 lowercase hex digits")]
pub struct BadDeviceId;

impl FromStr for DeviceId {
    type Err = BadDeviceId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let body = s.strip_prefix("dev_").ok_or(BadDeviceId)?;
        if body.len() != 2 * DEVICE_ID_LEN || body.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(BadDeviceId);
        }
        let bytes = hex::decode(body).map_err(|_| BadDeviceId)?;
        let id: [u8; DEVICE_ID_LEN] = bytes.try_into().map_err(|_| BadDeviceId)?;
        Ok(DeviceId(id))
    }
}

// As text everywhere it is stored or shown (ledger, metrics, config), so
// one device has one spelling.
impl serde::Serialize for DeviceId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for DeviceId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> VerifyingKey {
        ed25519_dalek::SigningKey::from_bytes(&[7; 32]).verifying_key()
    }

    #[test]
    fn a_device_id_round_trips_through_its_text_form() {
        let id = DeviceId::of(&key());
        let text = id.to_string();
        assert!(text.starts_with("dev_") && text.len() == 36);
        assert_eq!(text.parse::<DeviceId>(), Ok(id));
        assert_eq!("dev_xyz".parse::<DeviceId>(), Err(BadDeviceId));
        assert_eq!(text.to_uppercase().parse::<DeviceId>(), Err(BadDeviceId));
    }

    #[test]
    fn the_id_is_dev_and_the_hex_of_the_first_16_bytes_of_the_keys_sha256() {
        // Computed apart from this code (Python: `cryptography` for the
        // public key of the secret key [7; 32], `hashlib` for the SHA-256).
        let key = key();
        assert_eq!(
            hex::encode(key.as_bytes()),
            "ea4a6c63e29c520abef5507b132ec5f9954776aebebe7b92421eea691446d22c"
        );
        let expected = "dev_fe812c12f3ab4ce6ac5db69ac352f906";
        assert_eq!(DeviceId::of(&key).to_string(), expected);
        assert_eq!(DeviceId::of_key_bytes(key.as_bytes()).to_string(), expected);
    }
}
