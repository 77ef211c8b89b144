#!/usr/bin/env bash
# Benchmark: deploy a 20 MB package to the 3 testbed hosts (h1 h2 h3) with harness's packages crate, and the
# same file with Ansible (ansible-core from PyPI: copy + unarchive), each from scratch on every run.
#
#   bash bench/deploy.sh                   # needs the testbed up (HARNESS_TESTBED_ENV) and hyperfine
#   SIZE_MB=50 RUNS=5 bash bench/deploy.sh
#
# Ansible goes into a venv under /tmp (ANSIBLE_VENV) when missing. Both tools keep their ssh connections
# warm between runs (harness: ControlPersist of its masters; Ansible: its default ControlPersist=60s), so
# the numbers compare the transfer and install work, not ssh handshakes. harness also verifies the sha256
# on each host, checks the listing, extracts to a temporary directory and switches `current` atomically.
set -euo pipefail

here="$(cd "$(dirname "$0")/.." && pwd)"
size_mb="${SIZE_MB:-20}"
runs="${RUNS:-10}"
venv="${ANSIBLE_VENV:-/tmp/ansible-venv}"
env_file="${HARNESS_TESTBED_ENV:-/var/lib/harness-testbed/testbed.env}"
[ -f "$env_file" ] || { echo "testbed not running: bash tests/testbed/up.sh" >&2; exit 2; }
export HARNESS_TESTBED_ENV="$env_file"
# shellcheck disable=SC1090
. "$env_file"
ssh_config="$TB_SSH_CONFIG"
hosts="h1 h2 h3"
root_h=/opt/bench-harness
root_a=/opt/bench-ansible
work="$(mktemp -d)"
trap 'rm -rf "$work"; for h in $hosts; do ssh -F "$ssh_config" "$h" sudo -n rm -rf "$root_h" "$root_a" || true; done' EXIT

if [ ! -x "$venv/bin/ansible-playbook" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q ansible-core
fi

target="${CARGO_TARGET_DIR:-$here/target}"
(cd "$here" && cargo build --release --quiet -p packages --example deploy_hosts)
bin="$target/release/examples/deploy_hosts"

# A 20 MB package: incompressible data, so the archive is 20 MB on the wire too.
pkgdir="$work/big"
mkdir -p "$pkgdir/data"
printf 'name: big\nversion: 1.0.0\nstart: sleep infinity\n' >"$pkgdir/manifest.yaml"
head -c "$((size_mb * 1024 * 1024))" /dev/urandom >"$pkgdir/data/blob.bin"
echo 'echo hi' >"$pkgdir/run.sh"
"$bin" "$pkgdir" "$root_h" h1 >/dev/null # builds big-1.0.0.tar.zst into $TMPDIR/harness-packages
built="${TMPDIR:-/tmp}/harness-packages/big-1.0.0.tar.zst"
mv "$built" "$built.sha256" "$work/"
pkg="$work/big-1.0.0.tar.zst"
echo "package: $(du -h "$pkg" | cut -f1) $pkg"

cat >"$work/inventory.ini" <<INV
[testbed]
$(for h in $hosts; do echo "$h"; done)
[testbed:vars]
ansible_ssh_common_args=-F $ssh_config
ansible_python_interpreter=/usr/bin/python3
INV
cat >"$work/wipe.sh" <<WIPE
for h in $hosts; do ssh -F "$ssh_config" "\$h" sudo -n rm -rf "\$1"; done
WIPE
export ANSIBLE_HOST_KEY_CHECKING=False ANSIBLE_NOCOLOR=1

hyperfine --runs "$runs" --export-json "$work/result.json" \
    --prepare "sh $work/wipe.sh $root_h" -n harness "$bin $pkg $root_h $hosts" \
    --prepare "sh $work/wipe.sh $root_a" -n ansible \
    "$venv/bin/ansible-playbook -i $work/inventory.ini $here/bench/deploy/playbook.yml -e root=$root_a -e pkg=$pkg -e pkg_id=big-1.0.0"

# Both must have produced the same tree on every host.
for h in $hosts; do
    a=$(ssh -F "$ssh_config" "$h" "cd $root_h/big-1.0.0 && sha256sum data/blob.bin")
    b=$(ssh -F "$ssh_config" "$h" "cd $root_a/big-1.0.0 && sha256sum data/blob.bin")
    [ "$a" = "$b" ] || { echo "$h: trees differ: $a / $b" >&2; exit 1; }
done
python3 - "$work/result.json" <<'PY'
import json, sys
r = {x["command"]: x for x in json.load(open(sys.argv[1]))["results"]}
h, a = r["harness"]["mean"], r["ansible"]["mean"]
print(f"20 MB package to h1 h2 h3: harness {h*1000:.0f} ms, ansible copy+unarchive {a*1000:.0f} ms ({a/h:.1f}x)")
PY
