#!/usr/bin/env bash
# Run the fuzz targets (cargo-fuzz, libFuzzer, nightly toolchain), each for RUNS executions
# (default 10^7) or MAX_SECONDS (default 3600), whichever comes first, one after another
# (inputs up to MAX_LEN bytes, default 4096),
# starting from the seeds in fuzz/seeds/TARGET (made from the tests' inputs) and the corpus
# grown by earlier runs (fuzz/corpus/TARGET, not in git). Prints each target's last
# libFuzzer status line; a crash stops the run with its input in fuzz/artifacts/TARGET/.
#
#   fuzz/run.sh [TARGET...]      (default: every target)
set -euo pipefail
cd "$(dirname "$0")"
RUNS=${RUNS:-10000000}
MAX_SECONDS=${MAX_SECONDS:-3600}
command -v cargo-fuzz >/dev/null || { echo ">> installing cargo-fuzz" >&2; cargo install cargo-fuzz; }
rustup toolchain list | grep -q nightly || { echo ">> installing the nightly toolchain" >&2; rustup toolchain install nightly --profile minimal; }
dict() {
    case $1 in
        rewriter) echo dict/m3u8.dict ;;
        route) echo dict/route.dict ;;
        config) echo dict/config.dict ;;
        *) echo dict/tokens.dict ;;
    esac
}
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(token_secure_link token_jwt token_native route token_akamai token_cloudfront rewriter config)
[ -n "${SKIP_BUILD:-}" ] || cargo +nightly fuzz build -O -a >&2
mkdir -p artifacts
for t in "${targets[@]}"; do mkdir -p "artifacts/$t"; done
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t" "seeds/$t"
    start=$(date +%s)
    # The binary cargo-fuzz built (run directly: `cargo fuzz run` would rebuild it).
    "target/x86_64-unknown-linux-gnu/release/$t" "corpus/$t" "seeds/$t" \
        -runs="$RUNS" -max_total_time="$MAX_SECONDS" -dict="$(dict "$t")" \
        -max_len="${MAX_LEN:-4096}" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="artifacts/$t/" \
        > "corpus/$t.log" 2>&1 || { echo "!! $t failed: see fuzz/corpus/$t.log" >&2; tail -40 "corpus/$t.log" >&2; exit 1; }
    end=$(date +%s)
    runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "corpus/$t.log" | grep -o '[0-9]*$')
    echo "$t: $runs executions in $((end - start)) s, corpus $(ls "corpus/$t" | wc -l) inputs, no crash: $(grep -m1 '^Done ' "corpus/$t.log")"
done
