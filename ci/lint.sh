#!/usr/bin/env bash
# Formatting and clippy, warnings as errors, over every target.
set -euo pipefail
cd "$(dirname "$0")/.."

for tool in fmt clippy; do
  if ! cargo "$tool" --version >/dev/null 2>&1; then
    echo "ci/lint.sh: 'cargo $tool' is not installed (rustup component add rustfmt clippy)" >&2
    exit 1
  fi
done

locked=()
if [[ "${CI:-}" == "true" ]]; then
  locked=(--locked)
fi

echo "ci/lint.sh: cargo fmt --all -- --check"
cargo fmt --all -- --check

echo "ci/lint.sh: cargo clippy ${locked[*]} --all-targets -- -D warnings"
cargo clippy "${locked[@]}" --all-targets -- -D warnings
