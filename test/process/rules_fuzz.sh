#!/usr/bin/env bash
# Process-level test: a short libFuzzer run (about 50 s in all) of the rule
# parser and of the binary input, with ASan/UBSan/LeakSanitizer.  The full
# run (10 million executions per harness) is `bash test/fuzz/run.sh 10000000`.
set -euo pipefail
cd "$(dirname "$0")/../.."
command -v clang >/dev/null || { echo "clang is required for the fuzz test" >&2; exit 1; }
FUZZ_SECONDS=${FUZZ_SECONDS:-25} FUZZ_OUT=$(mktemp -d /tmp/settle-fuzz-short.XXXXXX) \
	bash test/fuzz/run.sh
