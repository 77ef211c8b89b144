//! `harness token create|list|revoke`: named API tokens with a scope (ADR 0037).

use std::time::Duration;

use comfy_table::Table;
use harness_protocol::admin::{Scope, TokenCreateParams, TokenInfo, TokenRevokeParams};
use harness_protocol::{Empty, method};

use super::{Status, connect, request_failed};
use crate::cli::TokenCommand;
use crate::output::{Context, print_json};

pub fn run(ctx: &Context, cmd: TokenCommand) -> Status {
    smol::block_on(async {
        let client = match connect(ctx).await {
            Ok(c) => c,
            Err(s) => return s,
        };
        match cmd {
            TokenCommand::Create {
                name,
                scope,
                expires,
            } => {
                let scope: Scope = match scope.parse() {
                    Ok(s) => s,
                    Err(e) => {
                        crate::errln!("error: --scope: {e}");
                        return Status::Invalid;
                    }
                };
                let params = TokenCreateParams {
                    name,
                    scope,
                    expires_in_secs: expires.map(|d: Duration| d.as_secs().max(1)),
                };
                match client.call::<method::TokenCreate>(&params).await {
                    Ok(r) if ctx.json() => print_json(&r),
                    Ok(r) => {
                        let until = r
                            .token
                            .expires_at
                            .map(|t| format!(", expires {t}"))
                            .unwrap_or_default();
                        crate::errln!(
                            "token {} created (scope {}{until}); its secret follows and cannot be shown again:",
                            r.token.name,
                            r.token.scope
                        );
                        crate::outln!("{}", r.secret);
                    }
                    Err(e) => return request_failed("token create", e),
                }
                Status::Ok
            }
            TokenCommand::List => match client.call::<method::TokenList>(&Empty {}).await {
                Ok(r) if ctx.json() => {
                    print_json(&r.tokens);
                    Status::Ok
                }
                Ok(r) if r.tokens.is_empty() => {
                    crate::outln!("no named tokens (make one with `harness token create`)");
                    Status::Ok
                }
                Ok(r) => {
                    crate::outln!("{}", table(ctx, &r.tokens));
                    Status::Ok
                }
                Err(e) => request_failed("token list", e),
            },
            TokenCommand::Revoke { name } => {
                let params = TokenRevokeParams { name };
                match client.call::<method::TokenRevoke>(&params).await {
                    Ok(r) if ctx.json() => print_json(&r),
                    Ok(r) => crate::outln!(
                        "token {} revoked ({} open connection{} closed)",
                        r.name,
                        r.connections_closed,
                        if r.connections_closed == 1 { "" } else { "s" }
                    ),
                    Err(e) => return request_failed("token revoke", e),
                }
                Status::Ok
            }
        }
    })
}

fn table(ctx: &Context, tokens: &[TokenInfo]) -> Table {
    let mut table = crate::output::table(ctx.color_out);
    table.set_header(["name", "scope", "created", "by", "expires"]);
    for t in tokens {
        let expires = match (t.expires_at, t.expired) {
            (Some(at), true) => format!("{at} (expired)"),
            (Some(at), false) => at.to_string(),
            (None, _) => "never".to_owned(),
        };
        table.add_row([
            t.name.clone(),
            t.scope.to_string(),
            t.created_at.to_string(),
            t.created_by.clone(),
            expires,
        ]);
    }
    table
}
