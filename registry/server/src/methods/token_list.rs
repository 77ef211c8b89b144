//! `token.list`: the named tokens, without secrets or hashes.

use harness_protocol::WireError;
use harness_protocol::admin::TokenListResult;

use crate::tokens::Tokens;

pub(crate) async fn handle(tokens: &Tokens) -> Result<TokenListResult, WireError> {
    Ok(TokenListResult {
        tokens: tokens.list(),
    })
}
