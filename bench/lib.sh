# Shared by the bench scripts that run one local daemon (source it; bash).

# Sets HARNESS_BIN: the given binary (absolute), else a release build of this checkout.
harness_bin() {
    local root
    root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
    if [[ -n "${HARNESS_BIN:-}" ]]; then
        HARNESS_BIN=$(realpath "$HARNESS_BIN")
    else
        (cd "$root" && cargo build --release --quiet -p harness)
        HARNESS_BIN="${CARGO_TARGET_DIR:-$root/target}/release/harness"
    fi
}

# The daemon's pid, from $HARNESS_HOME/daemon.json.
daemon_pid() {
    python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["pid"])' "$HARNESS_HOME/daemon.json"
}

# Writes to FILE a project `bench` of N `sleep 100000` services (s001, s002, ...).
sleep_services() {
    local file=$1 n=$2 i
    {
        echo "name: bench"
        echo "services:"
        for i in $(seq 1 "$n"); do
            printf '  s%03d:\n    command: [sleep, "100000"]\n' "$i"
        done
    } > "$file"
}
