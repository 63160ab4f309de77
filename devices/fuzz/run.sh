#!/usr/bin/env bash
# Runs each fuzz target for a bounded time (default 60 s each; FUZZ_SECONDS overrides).
# cargo-fuzz needs a nightly toolchain; without one, the same fuzz bodies run over seeded
# random inputs through the stable test suite instead.
set -euo pipefail
cd "$(dirname "$0")"
seconds="${FUZZ_SECONDS:-60}"
if cargo +nightly fuzz --version >/dev/null 2>&1; then
    for target in mmio_registers descriptor_chain; do
        echo "fuzzing $target for ${seconds}s"
        cargo +nightly fuzz run "$target" -- -max_total_time="$seconds"
    done
else
    echo "no nightly toolchain with cargo-fuzz: running the seeded fuzz bodies on stable instead"
    cd ..
    cargo test -p k42-devices --test virtio_properties fuzz_
fi
