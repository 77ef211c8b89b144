//! `token.revoke`: the token is refused from now on and its open connections are closed.

use harness_protocol::WireError;
use harness_protocol::admin::{TokenRevokeParams, TokenRevokeResult};

use crate::tokens::Tokens;

pub(crate) async fn handle(
    tokens: &Tokens,
    p: TokenRevokeParams,
) -> Result<TokenRevokeResult, WireError> {
    let connections_closed = tokens.revoke(&p.name).await?;
    tracing::info!(name = %p.name, connections_closed, "token revoked");
    Ok(TokenRevokeResult {
        name: p.name,
        connections_closed,
    })
}
