//! The POSIX sh programs run on a host to install, switch and roll back packages. The host needs sh, tar,
//! sha256sum, find, readlink and coreutils' `mv -T` (GNU or busybox); zstd is used when present.
//!
//! Layout under ROOT (default /opt):
//! ```text
//! NAME-VERSION/          an installed version, never modified once in place
//! NAME-VERSION.sha256    sha256 of the .tar.zst it came from (written before the directory is renamed)
//! NAME-current           symlink to the active NAME-VERSION, swapped with `ln -sfn` + `mv -T`
//! .NAME.history          versions in activation order, the active one last (rollback, pruning)
//! .NAME.lock/            held by the script changing NAME (pid, temporaries to remove if it dies)
//! .NAME-VERSION.*.PID    upload, listing and extraction temporaries, removed on exit
//! ```
//! Every program reports on stdout with lines `PHASE <name>`, `ERR <code> <detail>` or `DONE ...`;
//! `LC_ALL=C` keeps error texts classifiable.

/// Shared functions: failure reporting, error classification, the lock, activation.
const COMMON: &str = r#"export LC_ALL=C
root=$1 name=$2; shift 2
fail() { printf 'ERR %s %s\n' "$1" "$2"; exit 1; }
phase() { printf 'PHASE %s\n' "$1"; }
# classify PATH MESSAGE: permission and space problems get their own codes.
classify() {
    case "$2" in
    *"No space left"* | *"Disk quota"* | *"File too large"*) fail nospace "$1" ;;
    *"ermission denied"* | *"Read-only file system"* | *"Operation not permitted"*) fail perm "$1" ;;
    *) fail io "$1: $2" ;;
    esac
}
lock=$root/.$name.lock
locked=
unlock() { [ -z "$locked" ] || rm -rf "$lock"; }
take_lock() {
    e=$(mkdir -p -- "$root" 2>&1) || classify "$root" "$e"
    if ! mkdir -- "$lock" 2>/dev/null; then
        p=$(cat "$lock/pid" 2>/dev/null)
        if [ -n "$p" ] && [ -d "/proc/$p" ]; then fail busy "$lock"; fi
        # The dead holder's temporaries, as it listed them.
        if [ -f "$lock/cleanup" ]; then
            while IFS= read -r f; do case "$f" in "$root/."*) rm -rf -- "$f" ;; esac; done <"$lock/cleanup"
        fi
        rm -rf -- "$lock"
        e=$(mkdir -- "$lock" 2>&1) || { [ -d "$lock" ] && fail busy "$lock"; classify "$lock" "$e"; }
    fi
    locked=1
    echo $$ >"$lock/pid"
}
valid_version() { case "$1" in "" | *[!0-9A-Za-z.+-]*) return 1 ;; esac; }
# activate VERSION: point NAME-current at NAME-VERSION atomically and move VERSION to the end of history.
activate() {
    e=$(ln -sfn -- "$name-$1" "$root/.$name-current.$$" 2>&1) || classify "$root" "$e"
    e=$(mv -fT -- "$root/.$name-current.$$" "$root/$name-current" 2>&1) || {
        rm -f -- "$root/.$name-current.$$"
        classify "$root/$name-current" "$e"
    }
    h=$root/.$name.history
    { [ ! -f "$h" ] || grep -vxF -- "$1" "$h"; echo "$1"; } >"$h.$$" && mv -f -- "$h.$$" "$h" || {
        rm -f -- "$h.$$"
        fail io "$h: cannot write"
    }
}
current() { c=$(readlink -- "$root/$name-current" 2>/dev/null) && printf '%s\n' "${c#"$name-"}"; }
"#;

/// Read-only look at a host. Args: ROOT NAME VERSION REQUIRED-COMMAND...
/// Prints `CURRENT v`, `INSTALLED sha` (of VERSION), `VERSION v` per retained version, `ZSTD`,
/// `MISSING cmd`, `WRITABLE`.
const PROBE: &str = r#"ver=$1; shift
c=$(current) && printf 'CURRENT %s\n' "$c"
if [ -d "$root/$name-$ver" ] && [ -f "$root/$name-$ver.sha256" ]; then
    read -r s _ <"$root/$name-$ver.sha256" && printf 'INSTALLED %s\n' "$s"
fi
if [ -f "$root/.$name.history" ]; then
    while IFS= read -r v; do valid_version "$v" && [ -d "$root/$name-$v" ] && printf 'VERSION %s\n' "$v"; done <"$root/.$name.history"
fi
command -v zstd >/dev/null 2>&1 && echo ZSTD
for c in "$@" sh tar sha256sum find readlink mv ln mkdir rm grep cut head tail cat; do
    command -v "$c" >/dev/null 2>&1 || printf 'MISSING %s\n' "$c"
done
d=$root
while [ ! -e "$d" ]; do d=$(dirname -- "$d"); done
[ -w "$d" ] && echo WRITABLE
exit 0
"#;

/// Receives, verifies, checks, extracts, sets up and activates one version. stdin: the archive
/// (exactly SIZE bytes), then, once the program printed `PHASE ready`, the line `go`; anything else
/// (the deployer closing stdin: a cancelled deployment, or a deployer that died) ends it before
/// activation with `ERR cancelled`, everything it made removed.
/// Args: ROOT NAME VERSION STREAM-SHA PACKAGE-SHA FORMAT(zst|tar) KEEP REPLACE(0|1) SIZE SETUP K=V...
/// (the manifest's env, for setup only: it must not change how this program itself runs).
const INSTALL: &str = r#"ver=$1 want=$2 pkgsha=$3 fmt=$4 keep=$5 replace=$6 size=$7 setup=$8
shift 8
id=$name-$ver dest=$root/$id h=$root/.$name.history
up=$root/.$id.upload.$$ new=$root/.$id.new.$$
cleanup() { rm -rf -- "$up" "$up.names" "$up.list" "$up.links" "$up.err" "$new"; unlock; }
trap cleanup EXIT
# A deployer that dies (its connection closes) makes the next report line raise SIGPIPE: exit through
# cleanup then, as on the other signals, instead of dying with the upload and the lock left behind.
trap 'exit 141' PIPE
trap 'exit 129' HUP
trap 'exit 130' INT
trap 'exit 143' TERM
take_lock
printf '%s\n' "$up" "$up.names" "$up.list" "$up.links" "$up.err" "$new" "$root/.$name-current.$$" "$dest.sha256.$$" "$h.$$" >"$lock/cleanup"
phase upload
# Exactly SIZE bytes (head reads no further): the `go` line follows on the same stdin.
e=$(head -c "$size" 2>&1 >"$up") || classify "$up" "$e"
got=$(wc -c <"$up")
[ "$got" -eq "$size" ] || fail cancelled "during the upload ($got of $size bytes arrived)"
phase verify
got=$(sha256sum -- "$up" | cut -d' ' -f1)
[ "$got" = "$want" ] || fail checksum "$got"
untar() {
    if [ "$fmt" = zst ]; then zstd -dcq -- "$up" | tar "$@" -f -; else tar "$@" -f "$up"; fi
}
phase extract
# Names: nothing absolute or with `..` (a tar that strips such prefixes says so on stderr: refused too).
untar -t >"$up.names" 2>"$up.err" || fail io "listing $up: $(tail -n 3 "$up.err")"
[ ! -s "$up.err" ] || fail unsafe "$(head -n 1 "$up.err")"
while IFS= read -r p; do
    case "$p" in /* | .. | ../* | */../* | */..) fail unsafe "entry $p" ;; esac
done <"$up.names"
# Types and modes from the verbose listing: only files, directories and symlinks; no setuid/setgid.
untar -tv >"$up.list" 2>"$up.err" || fail io "listing $up: $(tail -n 3 "$up.err")"
: >"$up.links"
while read -r m o s d t rest; do
    case "$m" in [-dl]*) ;; *) fail unsafe "entry type ${m%"${m#?}"}: $rest" ;; esac
    case "$m" in ???[sS]* | ??????[sS]*) fail unsafe "setuid/setgid entry: $rest" ;; esac
    case "$m" in l*) printf '%s\n' "${rest%% -> *}" >>"$up.links" ;; esac
done <"$up.list"
# No entry may be written through a symlink of the same archive.
if [ -s "$up.links" ]; then
    while IFS= read -r p; do
        while IFS= read -r l; do
            case "$p" in "$l"/*) fail unsafe "entry $p goes through the symlink $l" ;; esac
        done <"$up.links"
    done <"$up.names"
fi
e=$(mkdir -- "$new" 2>&1) || classify "$new" "$e"
e=$(untar -x -o -C "$new" 2>&1) || classify "$new" "$e"
bad=$(find "$new" \( -perm -4000 -o -perm -2000 -o \( ! -type f ! -type d ! -type l \) \) -print | head -n 1)
[ -z "$bad" ] || fail unsafe "setuid, setgid or special file ${bad#"$new/"}"
real=$(cd "$new" && pwd -P)
find "$new" -type l >"$up.list"
while IFS= read -r l; do
    r=$(readlink -f -- "$l" 2>/dev/null) || continue
    case "$r" in "$real" | "$real"/*) ;; *) fail unsafe "symlink ${l#"$new/"} escapes to $r" ;; esac
done <"$up.list"
if [ -n "$setup" ]; then
    phase setup
    (
        cd "$new" || exit 126
        for kv in "$@"; do export "$kv"; done
        HARNESS_PACKAGE_DIR=$dest HARNESS_PACKAGE_NAME=$name HARNESS_PACKAGE_VERSION=$ver exec /bin/sh -c "$setup"
    ) </dev/null 1>&2
    rc=$?
    [ "$rc" = 0 ] || fail setup "$rc"
fi
# The last point to stop: the deployer says `go`, or closes stdin when the deployment was cancelled.
phase ready
IFS= read -r go || go=
[ "$go" = go ] || fail cancelled "before activation"
phase activate
e=$( { printf '%s  %s.tar.zst\n' "$pkgsha" "$id" >"$dest.sha256.$$" && mv -f -- "$dest.sha256.$$" "$dest.sha256"; } 2>&1) || {
    rm -f -- "$dest.sha256.$$"
    classify "$dest.sha256" "$e"
}
if [ -e "$dest" ] || [ -L "$dest" ]; then
    [ "$replace" = 1 ] || fail conflict "$dest"
    old=$root/.$id.old.$$
    e=$( { mv -- "$dest" "$old" && mv -- "$new" "$dest"; } 2>&1) || classify "$dest" "$e"
    rm -rf -- "$old"
else
    e=$(mv -- "$new" "$dest" 2>&1) || classify "$dest" "$e"
fi
prev=$(current) || prev=
activate "$ver"
# Keep the active version and the KEEP most recent others.
h=$root/.$name.history
n=$(wc -l <"$h")
drop=$((n - keep - 1))
if [ "$drop" -gt 0 ]; then
    head -n "$drop" "$h" | while IFS= read -r v; do
        valid_version "$v" && [ "$v" != "$ver" ] && rm -rf -- "$root/$name-$v" "$root/$name-$v.sha256"
    done
    tail -n "$((keep + 1))" "$h" >"$h.$$" && mv -f -- "$h.$$" "$h"
fi
printf 'DONE installed %s\n' "$prev"
"#;

/// Activates an installed version (same checksum deployed again while another is active), or rolls back.
/// Args: ROOT NAME [VERSION]. Without VERSION: the most recent retained version before the active one.
const SWITCH: &str = r#"take_lock
trap unlock EXIT
trap 'exit 141' PIPE
trap 'exit 129' HUP
trap 'exit 130' INT
trap 'exit 143' TERM
cur=$(current) || cur=
if [ $# -gt 0 ]; then
    to=$1
    valid_version "$to" && [ -d "$root/$name-$to" ] || fail notinstalled "$to"
else
    to=
    if [ -f "$root/.$name.history" ]; then
        while IFS= read -r v; do
            valid_version "$v" && [ "$v" != "$cur" ] && [ -d "$root/$name-$v" ] && to=$v
        done <"$root/.$name.history"
    fi
    [ -n "$to" ] || fail norollback "$root"
fi
phase activate
activate "$to"
printf 'DONE switched %s\n' "$cur"
"#;

fn program(body: &str) -> String {
    format!("{COMMON}{body}")
}

pub(crate) fn probe() -> String {
    program(PROBE)
}

pub(crate) fn install() -> String {
    program(INSTALL)
}

pub(crate) fn switch() -> String {
    program(SWITCH)
}
