//! Bearer-token authentication of the receivers: a token names a tenant, and
//! everything its holder sends is written to that tenant's chain.

use std::collections::HashMap;

use sha2::{Digest, Sha256};

use crate::config::{AuthSection, ConfigError};
use crate::ingest::Principal;

/// Why a request was not authenticated. The message never contains the
/// token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `authorization` header / metadata.
    #[error("missing authorization: send `Authorization: Bearer <token>`")]
    Missing,
    /// The header is not `Bearer <token>`.
    #[error("malformed authorization: expected `Bearer <token>`")]
    Malformed,
    /// The token is not configured.
    #[error("unknown bearer token")]
    Unknown,
}

/// Checks bearer tokens. With no token configured, every request passes with
/// an anonymous [`Principal`].
#[derive(Clone, Default)]
pub struct Authenticator {
    /// SHA-256 of each token → (name, tenant). Hashing first makes the map
    /// lookup independent of how much of a guessed token matches.
    tokens: HashMap<[u8; 32], (String, String)>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("tokens", &self.tokens.len())
            .finish()
    }
}

impl Authenticator {
    /// Loads the tokens of `receivers.auth` (reading `token_file` and
    /// `token_env`). Errors name the token entry.
    pub fn from_config(section: &AuthSection) -> Result<Self, ConfigError> {
        let mut tokens = HashMap::new();
        for (i, entry) in section.tokens.iter().enumerate() {
            let key = format!("receivers.auth.tokens[{i}]");
            let token = if let Some(t) = &entry.token {
                t.clone()
            } else if let Some(path) = &entry.token_file {
                std::fs::read_to_string(path).map_err(|e| ConfigError::Invalid {
                    key: format!("{key}.token_file"),
                    reason: format!("cannot read {}: {e}", path.display()),
                })?
            } else if let Some(var) = &entry.token_env {
                std::env::var(var).map_err(|_| ConfigError::Invalid {
                    key: format!("{key}.token_env"),
                    reason: format!("environment variable {var} is not set"),
                })?
            } else {
                return Err(ConfigError::Invalid {
                    key,
                    reason: "exactly one of token, token_file and token_env must be set".into(),
                });
            };
            let token = token.trim();
            if token.len() < 16 {
                return Err(ConfigError::Invalid {
                    key,
                    reason: "the token is shorter than 16 characters".into(),
                });
            }
            let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
            if tokens
                .insert(digest, (entry.name.clone(), entry.tenant.clone()))
                .is_some()
            {
                return Err(ConfigError::Invalid {
                    key,
                    reason: "the same token is configured twice".into(),
                });
            }
        }
        Ok(Authenticator { tokens })
    }

    /// Whether authentication is on.
    pub fn enabled(&self) -> bool {
        !self.tokens.is_empty()
    }

    /// Checks the value of an `authorization` header (`None` when absent).
    pub fn check(&self, header: Option<&str>) -> Result<Principal, AuthError> {
        if !self.enabled() {
            return Ok(Principal::default());
        }
        let header = header.ok_or(AuthError::Missing)?.trim();
        let (scheme, token) = header.split_once(' ').ok_or(AuthError::Malformed)?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(AuthError::Malformed);
        }
        let digest: [u8; 32] = Sha256::digest(token.trim().as_bytes()).into();
        let (name, tenant) = self.tokens.get(&digest).ok_or(AuthError::Unknown)?;
        Ok(Principal {
            tenant: Some(tenant.clone()),
            token_name: Some(name.clone()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TokenEntry;

    fn auth() -> Authenticator {
        Authenticator::from_config(&AuthSection {
            tokens: vec![TokenEntry {
                name: "acme-app".into(),
                tenant: "acme".into(),
                token: Some("acme-token-0123456789".into()),
                token_file: None,
                token_env: None,
            }],
        })
        .unwrap()
    }

    #[test]
    fn bearer_tokens_map_to_tenants() {
        let a = auth();
        let p = a.check(Some("Bearer acme-token-0123456789")).unwrap();
        assert_eq!(p.tenant.as_deref(), Some("acme"));
        assert_eq!(p.token_name.as_deref(), Some("acme-app"));
        assert_eq!(a.check(None), Err(AuthError::Missing));
        assert_eq!(a.check(Some("Basic xyz")), Err(AuthError::Malformed));
        assert_eq!(a.check(Some("Bearer nope")), Err(AuthError::Unknown));
        assert_eq!(
            Authenticator::default().check(None),
            Ok(Principal::default())
        );
    }

    #[test]
    fn short_tokens_are_refused() {
        let e = Authenticator::from_config(&AuthSection {
            tokens: vec![TokenEntry {
                name: "x".into(),
                tenant: "acme".into(),
                token: Some("short".into()),
                token_file: None,
                token_env: None,
            }],
        })
        .unwrap_err();
        assert!(e.to_string().starts_with("receivers.auth.tokens[0]"), "{e}");
    }
}
