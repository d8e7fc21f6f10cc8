# Sourced by the run, test and bench scripts: `need COMMAND DEBIAN-PACKAGE` installs the
# package when the command is missing (apt-get; sudo when not root), saying so.
need() {
    command -v "$1" >/dev/null 2>&1 && return 0
    echo ">> $1 is missing: installing Debian package $2" >&2
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    if [ -z "${HLSGATE_APT_UPDATED:-}" ]; then
        $sudo apt-get update -qq >&2 || { echo "!! apt-get update failed" >&2; return 1; }
        export HLSGATE_APT_UPDATED=1
    fi
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$2" >&2 \
        || { echo "!! could not install $2; install it and retry" >&2; return 1; }
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

# rustfmt and clippy, which the test script runs.
need_lint() {
    need_cargo
    for c in rustfmt clippy; do
        cargo "${c/rustfmt/fmt}" --version >/dev/null 2>&1 && continue
        echo ">> cargo $c is missing: adding the rustup component" >&2
        rustup component add "$c" >&2
    done
}
