#!/usr/bin/env bash
# Build the Debian package: target/debian/hlsgate_<version>-1_<arch>.deb (cargo-deb;
# installed when missing). It holds /usr/bin/hlsgate, the systemd unit
# /lib/systemd/system/hlsgate@.service (instances serve, edge, admin),
# /etc/hlsgate/hlsgate.yaml (conf/hlsgate.yaml with absolute paths: state in
# /var/lib/hlsgate, the demo stream in /usr/share/hlsgate/demo) and the README.
#   scripts/package.sh                 # release build + package
#   sudo apt install ./target/debian/hlsgate_*.deb && sudo systemctl enable --now hlsgate@serve
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/need.sh
need_build
need_cargo_deb
mkdir -p target/package
# The shipped config, made to work from / (the unit's working directory is /var/lib/hlsgate).
sed -e 's|"sqlite://data/hlsgate.db"|"sqlite:///var/lib/hlsgate/hlsgate.db"|' \
    -e 's|secret_file: "data/secret.key"|secret_file: "/var/lib/hlsgate/secret.key"|' \
    -e 's|"file://conf/demo/index.m3u8"|"file:///usr/share/hlsgate/demo/index.m3u8"|' \
    -e 's|upgrade_socket: "data/upgrade.sock"|upgrade_socket: "/run/hlsgate-serve/upgrade.sock"|' \
    -e 's|^# Validate with:  hlsgate check-config -c conf/hlsgate.yaml|# Validate with:  hlsgate check-config -c /etc/hlsgate/hlsgate.yaml|' \
    conf/hlsgate.yaml > target/package/hlsgate.yaml
if grep -nE '"(data/|conf/|file://[^/])' target/package/hlsgate.yaml; then
    echo "!! a relative path is left in the packaged config (above)" >&2
    exit 1
fi
echo ">> cargo deb (release build; the first takes several minutes)" >&2
cargo deb --strip "$@"
