//! Who is asking (ADR 0037): the owner's token (`$HARNESS_HOME/token`, every scope) and named
//! tokens with a scope, stored as the SHA-256 of their secret in the registry store.
//!
//! A presented bearer is hashed and compared in constant time with every stored hash (and the
//! owner's token), so neither the match nor its position leaks through timing. Each open connection
//! is recorded with its token's name: revoking a token, or its expiry passing, closes them with
//! [`close_codes::TOKEN_REVOKED`](harness_protocol::wire::close_codes::TOKEN_REVOKED).

use std::collections::HashMap;
use std::sync::{Mutex, RwLock};

use jiff::Timestamp;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use harness_protocol::admin::{OWNER, Scope, TokenInfo};
use harness_protocol::wire::{ErrorCode, WireError};
use harness_store::{Store, StoredToken};

use crate::server::Kill;

/// The token a connection authenticated with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// `owner`, or the named token's name.
    pub name: String,
    pub scope: Scope,
    pub expires_at: Option<Timestamp>,
}

impl Principal {
    pub fn owner() -> Self {
        Principal {
            name: OWNER.to_owned(),
            scope: Scope::Admin,
            expires_at: None,
        }
    }
}

/// Why a bearer was refused (for the log; the client sees 401 either way).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    Missing,
    Unknown,
    Expired,
}

impl Refusal {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Refusal::Missing => "missing bearer token",
            Refusal::Unknown => "wrong token",
            Refusal::Expired => "expired token",
        }
    }
}

struct Open {
    name: String,
    expires_at: Option<Timestamp>,
    kill: async_channel::Sender<Kill>,
}

pub(crate) struct Tokens {
    owner: String,
    named: RwLock<Vec<StoredToken>>,
    store: Store,
    open: Mutex<HashMap<u64, Open>>,
}

fn hash(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

fn info(t: &StoredToken, now: Timestamp) -> TokenInfo {
    TokenInfo {
        name: t.name.clone(),
        scope: t.scope,
        created_at: t.created_at,
        expires_at: t.expires_at,
        created_by: t.created_by.clone(),
        expired: t.expires_at.is_some_and(|e| e <= now),
    }
}

fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        && name != OWNER
}

impl Tokens {
    pub(crate) async fn load(
        owner: String,
        store: Store,
    ) -> Result<Self, harness_store::StoreError> {
        let named = store.tokens().await?;
        Ok(Tokens {
            owner,
            named: RwLock::new(named),
            store,
            open: Mutex::new(HashMap::new()),
        })
    }

    /// The principal of a bearer token, or why it is refused.
    pub(crate) fn authenticate(&self, bearer: Option<&str>) -> Result<Principal, Refusal> {
        let Some(bearer) = bearer else {
            return Err(Refusal::Missing);
        };
        let is_owner: bool = bearer.as_bytes().ct_eq(self.owner.as_bytes()).into();
        let digest = hash(bearer);
        let named = self.named.read().unwrap_or_else(|p| p.into_inner());
        // Every stored hash is compared, whatever matched.
        let mut found: Option<&StoredToken> = None;
        for t in named.iter() {
            if bool::from(t.hash.ct_eq(&digest)) {
                found = Some(t);
            }
        }
        if is_owner {
            return Ok(Principal::owner());
        }
        let t = found.ok_or(Refusal::Unknown)?;
        if t.expires_at.is_some_and(|e| e <= Timestamp::now()) {
            return Err(Refusal::Expired);
        }
        Ok(Principal {
            name: t.name.clone(),
            scope: t.scope,
            expires_at: t.expires_at,
        })
    }

    pub(crate) fn attach(
        &self,
        connection: u64,
        who: &Principal,
        kill: async_channel::Sender<Kill>,
    ) {
        self.open.lock().unwrap_or_else(|p| p.into_inner()).insert(
            connection,
            Open {
                name: who.name.clone(),
                expires_at: who.expires_at,
                kill,
            },
        );
    }

    pub(crate) fn detach(&self, connection: u64) {
        self.open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&connection);
    }

    /// Closes the connections whose token is `name` (or, with `None`, whose token has expired);
    /// returns how many.
    fn close(&self, name: Option<&str>) -> u64 {
        let now = Timestamp::now();
        let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let mut n = 0;
        for o in open.values() {
            let hit = match name {
                Some(name) => o.name == name,
                None => o.expires_at.is_some_and(|e| e <= now),
            };
            if hit && o.kill.try_send(Kill::Revoked).is_ok() {
                n += 1;
            }
        }
        n
    }

    /// Closes connections whose token expired; the server runs this every 250 ms.
    pub(crate) fn close_expired(&self) -> u64 {
        self.close(None)
    }

    pub(crate) fn list(&self) -> Vec<TokenInfo> {
        let now = Timestamp::now();
        let mut list: Vec<TokenInfo> = self
            .named
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|t| info(t, now))
            .collect();
        list.sort_by(|a, b| a.name.cmp(&b.name));
        list
    }

    /// Makes a token; returns it and its secret.
    pub(crate) async fn create(
        &self,
        name: &str,
        scope: Scope,
        expires_in: Option<std::time::Duration>,
        created_by: &str,
    ) -> Result<(TokenInfo, String), WireError> {
        if !valid_name(name) {
            return Err(WireError::invalid_params(format!(
                "name: {name:?} is not a token name (1-64 of A-Z a-z 0-9 . _ -, not {OWNER:?})"
            )));
        }
        let now = Timestamp::now();
        let expires_at = match expires_in {
            Some(d) => Some(
                jiff::SignedDuration::try_from(d)
                    .ok()
                    .and_then(|d| now.checked_add(d).ok())
                    .ok_or_else(|| {
                        WireError::invalid_params("expires_in_secs: too far in the future")
                    })?,
            ),
            None => None,
        };
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(WireError::internal)?;
        let secret = format!("hnt_{}", hex::encode(bytes));
        let stored = StoredToken {
            name: name.to_owned(),
            scope,
            hash: hash(&secret),
            created_at: now,
            expires_at,
            created_by: created_by.to_owned(),
        };
        let inserted = self
            .store
            .token_insert(stored.clone())
            .await
            .map_err(WireError::internal)?;
        if !inserted {
            return Err(WireError::new(
                ErrorCode::AlreadyExists,
                format!("a token named {name:?} exists; revoke it first"),
            ));
        }
        let token = info(&stored, now);
        self.named
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push(stored);
        Ok((token, secret))
    }

    /// Removes a token: refused from now on, its open connections closed.
    pub(crate) async fn revoke(&self, name: &str) -> Result<u64, WireError> {
        let known = {
            let mut named = self.named.write().unwrap_or_else(|p| p.into_inner());
            let before = named.len();
            named.retain(|t| t.name != name);
            named.len() != before
        };
        let closed = self.close(Some(name));
        let removed = self
            .store
            .token_remove(name)
            .await
            .map_err(WireError::internal)?;
        if !known && !removed {
            return Err(WireError::new(
                ErrorCode::NotFound,
                format!("no token named {name:?}"),
            ));
        }
        Ok(closed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(valid_name("ci-reader.1_x"));
        assert!(!valid_name(""));
        assert!(!valid_name("owner"));
        assert!(!valid_name("a b"));
        assert!(!valid_name(&"a".repeat(65)));
    }
}
