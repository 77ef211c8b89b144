//! POSIX sh quoting. ssh hands the remote login shell one string, so argv crossing ssh is quoted exactly once;
//! sudo and docker exec take argv and need no quoting.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

/// Bytes that never need quoting in any POSIX shell position (not even as the first word: no `~`, `#`, `=`).
fn is_plain(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'_' | b'.' | b'/' | b',' | b'+' | b':' | b'@' | b'%'
        )
}

/// Quotes one argument so a POSIX shell reads it back byte for byte: plain words stay as they are, everything
/// else goes in single quotes with each `'` written as `'\''`. The empty string becomes `''`.
pub fn quote(arg: &OsStr) -> Vec<u8> {
    let bytes = arg.as_bytes();
    if !bytes.is_empty() && bytes.iter().all(|&b| is_plain(b)) {
        return bytes.to_vec();
    }
    let mut out = Vec::with_capacity(bytes.len() + 2);
    out.push(b'\'');
    for &b in bytes {
        if b == b'\'' {
            out.extend_from_slice(b"'\\''");
        } else {
            out.push(b);
        }
    }
    out.push(b'\'');
    out
}

/// Quotes every argument and joins them with single spaces: one command line for a POSIX shell.
pub fn join<I, S>(argv: I) -> Vec<u8>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut out = Vec::new();
    for (i, arg) in argv.into_iter().enumerate() {
        if i > 0 {
            out.push(b' ');
        }
        out.extend_from_slice(&quote(arg.as_ref()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsString;
    use std::os::unix::ffi::OsStringExt;

    fn q(s: &str) -> String {
        String::from_utf8(quote(OsStr::new(s))).unwrap()
    }

    #[test]
    fn plain_words_stay() {
        assert_eq!(q("abc-1.2/x"), "abc-1.2/x");
    }

    #[test]
    fn specials_are_quoted() {
        assert_eq!(q(""), "''");
        assert_eq!(q("a b"), "'a b'");
        assert_eq!(q("it's"), "'it'\\''s'");
        assert_eq!(q("~"), "'~'");
        assert_eq!(q("#x"), "'#x'");
        assert_eq!(q("$HOME"), "'$HOME'");
        assert_eq!(q("a=b"), "'a=b'");
        assert_eq!(q("\n"), "'\n'");
    }

    #[test]
    fn join_spaces() {
        assert_eq!(join(["a", "", "b c"]), b"a '' 'b c'".to_vec());
    }

    /// Every shell on this machine reads the quoted argv back byte for byte.
    #[test]
    fn shells_read_quoted_argv_back() {
        let argv: Vec<OsString> = vec![
            "".into(),
            " ".into(),
            "'".into(),
            "\"".into(),
            "#c".into(),
            "~".into(),
            "~root".into(),
            "$x".into(),
            "*".into(),
            ";".into(),
            "a\nb".into(),
            "\\".into(),
            "grüße".into(),
            "`id`".into(),
            OsString::from_vec(vec![0xff, b'x']),
        ];
        for shell in ["sh", "bash", "dash"] {
            if std::process::Command::new(shell)
                .arg("-c")
                .arg("true")
                .status()
                .is_err()
            {
                continue;
            }
            let mut script = b"for a in ".to_vec();
            script.extend(join(&argv));
            script.extend_from_slice(b"; do printf '%s\\0' \"$a\"; done");
            let out = std::process::Command::new(shell)
                .arg("-c")
                .arg(OsStr::from_bytes(&script))
                .output()
                .unwrap();
            let got: Vec<&[u8]> = out.stdout.split(|&b| b == 0).collect();
            let want: Vec<&[u8]> = argv.iter().map(|a| a.as_bytes()).collect();
            assert_eq!(&got[..got.len() - 1], &want[..], "shell {shell}");
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        #[test]
        fn quoted_is_single_word(s in "\\PC*") {
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(OsStr::from_bytes(&[b"printf '%s' ".as_slice(), &quote(OsStr::new(&s))].concat()))
                .output()
                .unwrap();
            proptest::prop_assert_eq!(out.stdout, s.as_bytes().to_vec());
        }
    }
}
