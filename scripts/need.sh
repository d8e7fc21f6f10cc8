# Sourced by the run, test and bench scripts: `need COMMAND DEBIAN-PACKAGE` installs the
# package when the command is missing (apt-get; sudo when not root), saying so.
need() {
    command -v "$1" >/dev/null 2>&1 && return 0
    echo ">> $1 is missing: installing Debian package $2" >&2
    apt_install "$2"
}

# Install Debian packages (apt-get update once per run; sudo when not root).
apt_install() {
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    if [ -z "${HLSGATE_APT_UPDATED:-}" ]; then
        $sudo apt-get update -qq >&2 || { echo "!! apt-get update failed" >&2; return 1; }
        export HLSGATE_APT_UPDATED=1
    fi
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@" >&2 \
        || { echo "!! could not install $*; install it and retry" >&2; return 1; }
}

# Debian's Python with a module (`need_pymod MODULE DEBIAN-PACKAGE`): the third-party token
# signers the tests call (PyJWT) run on /usr/bin/python3.
need_pymod() {
    /usr/bin/python3 -c "import $1" >/dev/null 2>&1 && return 0
    echo ">> python module $1 is missing: installing Debian package $2" >&2
    apt_install python3 "$2"
}

# Rust toolchain: rustup's cargo when cargo is missing.
need_cargo() {
    command -v cargo >/dev/null 2>&1 && return 0
    [ -x "$HOME/.cargo/bin/cargo" ] && { export PATH="$HOME/.cargo/bin:$PATH"; return 0; }
    need curl curl
    echo ">> cargo is missing: installing the Rust toolchain with rustup" >&2
    curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal -c rustfmt -c clippy >&2
    export PATH="$HOME/.cargo/bin:$PATH"
}

# What building hlsgate needs: a C compiler and cmake (Pingora's compression builds
# zlib-ng from source with them).
need_build() {
    need_cargo
    need cc build-essential
    need cmake cmake
    need pkg-config pkg-config
}

# cargo-deb (builds the .deb), and what checks a package: dpkg-deb, systemd-analyze.
need_cargo_deb() {
    need_cargo
    if ! cargo deb --version >/dev/null 2>&1; then
        echo ">> cargo-deb is missing: installing it from crates.io (cargo install cargo-deb, a few minutes)" >&2
        cargo install --locked cargo-deb >&2
    fi
    need dpkg-deb dpkg
    need systemd-analyze systemd
}

# rustfmt and clippy, which the test script runs.
need_lint() {
    need_cargo
    for c in rustfmt clippy; do
        cargo "${c/rustfmt/fmt}" --version >/dev/null 2>&1 && continue
        echo ">> cargo $c is missing: adding the rustup component" >&2
        rustup component add "$c" >&2
    done
}

# A PostgreSQL server on loopback for the store tests: installs the Debian package when
# missing, starts its cluster, and creates the role and database the tests use
# (postgres://hlsgate:hlsgate@127.0.0.1:5432/hlsgate; the role may create the throwaway
# databases each test makes). Skipped when HLSGATE_TEST_POSTGRES names another server.
need_postgres() {
    [ -n "${HLSGATE_TEST_POSTGRES:-}" ] && return 0
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    command -v pg_lsclusters >/dev/null 2>&1 || need pg_lsclusters postgresql
    local cluster
    cluster=$(pg_lsclusters -h | awk 'NR==1 {print $1" "$2}')
    if [ -z "$cluster" ]; then
        local ver
        ver=$(ls /usr/lib/postgresql | sort -n | tail -1)
        echo ">> creating PostgreSQL cluster $ver/main" >&2
        $sudo pg_createcluster "$ver" main >&2
        cluster="$ver main"
    fi
    if ! pg_lsclusters -h | awk -v c="$cluster" '$1" "$2==c {print $4}' | grep -q online; then
        echo ">> starting PostgreSQL cluster $cluster" >&2
        # shellcheck disable=SC2086
        $sudo pg_ctlcluster $cluster start >&2
    fi
    if [ "$(as_postgres "psql -qtA -c \"SELECT 1 FROM pg_roles WHERE rolname='hlsgate'\"")" != 1 ]; then
        echo ">> creating PostgreSQL role hlsgate (tests)" >&2
        as_postgres "psql -v ON_ERROR_STOP=1 -q -c \"CREATE ROLE hlsgate LOGIN CREATEDB PASSWORD 'hlsgate'\""
    fi
    if [ "$(as_postgres "psql -qtA -c \"SELECT 1 FROM pg_database WHERE datname='hlsgate'\"")" != 1 ]; then
        as_postgres "createdb -O hlsgate hlsgate"
    fi
}

# Run a shell command as the postgres system user.
as_postgres() {
    if [ "$(id -u)" -eq 0 ]; then
        su postgres -c "$1"
    else
        sudo -u postgres sh -c "$1"
    fi
}

# A Python virtualenv at target/pyvenv holding what the tests call from PyPI that Debian
# does not package: the signers (Akamai's EdgeAuth library, PyJWT, botocore) and
# mmdb-writer (the country databases of tests/place.rs and bench/geoip.sh).
need_pyvenv() {
    local venv=target/pyvenv
    "$venv/bin/python" -c "import akamai.edgeauth, jwt, botocore, cryptography, mmdb_writer" >/dev/null 2>&1 && return 0
    need_pymod ensurepip python3-venv
    echo ">> installing akamai-edgeauth, PyJWT, cryptography, botocore and mmdb-writer (PyPI) into $venv" >&2
    [ -x "$venv/bin/pip" ] || /usr/bin/python3 -m venv "$venv" >&2
    "$venv/bin/pip" install -q --disable-pip-version-check "akamai-edgeauth==0.3.2" \
        "PyJWT[crypto]>=2.8,<3" "botocore>=1.34,<2" "mmdb-writer==0.2.7" >&2
}

# A browser player for tests/browser.rs: Debian's chromium, node + npm, and the pinned npm
# packages of tests/browser (playwright-core drives chromium; hls.js is the player).
need_browser() {
    need chromium chromium
    need node nodejs
    need npm npm
    local m=tests/browser/node_modules
    [ -d $m/playwright-core ] && [ -d $m/hls.js ] && [ -d $m/typescript ] && [ -d $m/@grafana/schema ] && return 0
    echo ">> installing tests/browser's npm packages (playwright-core, hls.js, typescript, @grafana/schema)" >&2
    (cd tests/browser && npm ci --no-audit --no-fund --silent) >&2
}

# nginx with its RTMP module for tests/publish.rs (the real nginx-rtmp calling hlsgate's
# publishing callbacks).
need_rtmp() {
    need nginx nginx
    [ -f /usr/lib/nginx/modules/ngx_rtmp_module.so ] && return 0
    echo ">> the nginx RTMP module is missing: installing Debian package libnginx-mod-rtmp" >&2
    apt_install libnginx-mod-rtmp
}
