//! `token.create`: a named token with a scope; its secret is in the result and nowhere else.

use harness_protocol::WireError;
use harness_protocol::admin::{TokenCreateParams, TokenCreateResult};

use crate::RequestContext;
use crate::tokens::Tokens;

pub(crate) async fn handle(
    tokens: &Tokens,
    p: TokenCreateParams,
    ctx: &RequestContext,
) -> Result<TokenCreateResult, WireError> {
    let expires = p.expires_in_secs.map(std::time::Duration::from_secs);
    let (token, secret) = tokens.create(&p.name, p.scope, expires, &ctx.token).await?;
    tracing::info!(name = %token.name, scope = %token.scope, by = %ctx.token, "token created");
    Ok(TokenCreateResult { token, secret })
}
