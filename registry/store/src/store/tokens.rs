//! Named API tokens (ADR 0037): one row per token, keyed by name, holding the SHA-256 of its secret
//! (never the secret). Written outside the event writer's group commit: token changes are rare and
//! redb serializes write transactions.

use jiff::Timestamp;
use redb::{ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use super::{Store, StoreError, storage};
use harness_protocol::admin::Scope;

const TOKENS: TableDefinition<&str, &[u8]> = TableDefinition::new("tokens");

/// A named token as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredToken {
    pub name: String,
    pub scope: Scope,
    /// SHA-256 of the secret.
    pub hash: [u8; 32],
    pub created_at: Timestamp,
    #[serde(default)]
    pub expires_at: Option<Timestamp>,
    pub created_by: String,
}

impl Store {
    /// Every named token, by name.
    pub async fn tokens(&self) -> Result<Vec<StoredToken>, StoreError> {
        let db = self.inner.db.clone();
        blocking::unblock(move || {
            let db = db.get()?;
            let txn = db.begin_read().map_err(storage)?;
            let table = match txn.open_table(TOKENS) {
                Ok(t) => t,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
                Err(e) => return Err(storage(e)),
            };
            let mut out = Vec::new();
            for row in table.iter().map_err(storage)? {
                let (_, v) = row.map_err(storage)?;
                out.push(serde_json::from_slice(v.value()).map_err(storage)?);
            }
            Ok(out)
        })
        .await
    }

    /// Adds a token; `AlreadyExists`-like refusal is the caller's (it checks names first), this
    /// refuses to overwrite and answers `false` when the name is taken.
    pub async fn token_insert(&self, token: StoredToken) -> Result<bool, StoreError> {
        let db = self.inner.db.clone();
        blocking::unblock(move || {
            let db = db.get()?;
            let txn = db.begin_write().map_err(storage)?;
            let inserted = {
                let mut table = txn.open_table(TOKENS).map_err(storage)?;
                if table.get(token.name.as_str()).map_err(storage)?.is_some() {
                    false
                } else {
                    let json = serde_json::to_vec(&token).map_err(storage)?;
                    table
                        .insert(token.name.as_str(), json.as_slice())
                        .map_err(storage)?;
                    true
                }
            };
            txn.commit().map_err(storage)?;
            Ok(inserted)
        })
        .await
    }

    /// Removes a token; `false` if there was none of that name.
    pub async fn token_remove(&self, name: &str) -> Result<bool, StoreError> {
        let db = self.inner.db.clone();
        let name = name.to_owned();
        blocking::unblock(move || {
            let db = db.get()?;
            let txn = db.begin_write().map_err(storage)?;
            let removed = {
                let mut table = txn.open_table(TOKENS).map_err(storage)?;
                table.remove(name.as_str()).map_err(storage)?.is_some()
            };
            txn.commit().map_err(storage)?;
            Ok(removed)
        })
        .await
    }
}
