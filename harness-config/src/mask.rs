//! Hiding secret-looking values in output (`config show`, daemon answers).

use serde_json::Value;

/// What a masked value is replaced with.
pub const MASK: &str = "********";

/// Key fragments that mark a value as secret, matched case-insensitively.
pub const SECRET_MARKERS: &[&str] = &["PASSWORD", "TOKEN", "SECRET", "KEY", "CREDENTIAL"];

/// Whether a value stored under `key` should be hidden.
pub fn is_secret_key(key: &str) -> bool {
    let upper = key.to_ascii_uppercase();
    SECRET_MARKERS.iter().any(|m| upper.contains(m))
}

/// Replaces, anywhere in `value`, every scalar stored under a secret-looking key with [`MASK`].
/// Works on any serialized form, so the CLI and the daemon mask the same way.
pub fn mask_secrets(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                if is_secret_key(key)
                    && !matches!(v, Value::Object(_) | Value::Array(_) | Value::Null)
                {
                    *v = Value::String(MASK.to_owned());
                } else {
                    mask_secrets(v);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(mask_secrets),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn masks_secret_keys_at_any_depth() {
        let mut v = json!({
            "services": {"db": {"env": {
                "POSTGRES_PASSWORD": "hunter2", "api_token": "t", "AWS_SECRET_ACCESS_KEY": "s",
                "ssh_key_path": "/k", "Credentials": 5, "USER": "me"
            }}},
            "list": [{"token": "x"}]
        });
        mask_secrets(&mut v);
        let env = &v["services"]["db"]["env"];
        for k in [
            "POSTGRES_PASSWORD",
            "api_token",
            "AWS_SECRET_ACCESS_KEY",
            "ssh_key_path",
            "Credentials",
        ] {
            assert_eq!(env[k], MASK, "{k}");
        }
        assert_eq!(env["USER"], "me");
        assert_eq!(v["list"][0]["token"], MASK);
    }
}
