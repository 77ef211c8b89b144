//! `daemon.env`: the daemon's environment, values under secret-looking names (PASSWORD, TOKEN,
//! SECRET, KEY, CREDENTIAL) masked with `harness_config`'s masking.

use std::collections::BTreeMap;
use std::sync::Arc;

use harness_protocol::admin::DaemonEnvResult;
use harness_protocol::{Empty, WireError};
use harness_server::RequestContext;

use crate::daemon::State;

pub async fn handle(
    _state: Arc<State>,
    _p: Empty,
    _ctx: RequestContext,
) -> Result<DaemonEnvResult, WireError> {
    let env: BTreeMap<String, String> = std::env::vars_os()
        .map(|(k, v)| {
            let k = k.to_string_lossy().into_owned();
            let v = if harness_config::is_secret_key(&k) {
                harness_config::MASK.to_owned()
            } else {
                v.to_string_lossy().into_owned()
            };
            (k, v)
        })
        .collect();
    Ok(DaemonEnvResult { env })
}
