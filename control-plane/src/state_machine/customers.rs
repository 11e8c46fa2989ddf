//! Customers: applying `CreateCustomer`, and the API-key hash customers
//! are looked up by (the key itself is never stored).

use sha2::{Digest, Sha256};

use super::dispatch::{check_name, Applied, Applier};
use super::tables::*;
use super::tx::ApplyError;
use crate::types::{Outcome, Rejection};

impl Applier<'_, '_> {
    pub(super) fn create_customer(
        &mut self,
        id: &str,
        name: &str,
        key_sha256: &[u8; 32],
    ) -> Result<Applied, ApplyError> {
        if let Err(r) = check_name("id", id).and_then(|_| check_name("name", name)) {
            return Ok(Err(r));
        }
        if self.tx.get_raw(CUSTOMERS, id.as_bytes())?.is_some() {
            return Ok(Err(Rejection::AlreadyExists(format!("customer {id}"))));
        }
        if self.tx.get_raw(CUSTOMER_KEYS, key_sha256)?.is_some() {
            return Ok(Err(Rejection::AlreadyExists("that API key".into())));
        }
        let customer = Customer {
            id: id.to_string(),
            name: name.to_string(),
            key_sha256: *key_sha256,
            created_at_ms: self.at_ms,
        };
        self.tx.put(CUSTOMERS, id.as_bytes(), &customer)?;
        self.tx.put_raw(CUSTOMER_KEYS, key_sha256, id.as_bytes())?;
        tracing::info!(customer = id, "customer created");
        Ok(Ok(Outcome::CustomerCreated { id: id.to_string() }))
    }
}

/// SHA-256 of an API key, as customers are looked up by.
pub fn api_key_hash(api_key: &str) -> [u8; 32] {
    Sha256::digest(api_key.as_bytes()).into()
}
