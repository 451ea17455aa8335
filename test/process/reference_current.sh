#!/usr/bin/env bash
# docs/reference.md is in step with the code: regenerating it from the
# catalogue gives the committed file byte for byte.
set -euo pipefail
cd "$(dirname "$0")/../.."
tmp=$(mktemp)
bash test/gen_reference.sh "$tmp"
if diff -u docs/reference.md "$tmp"; then echo "ok: docs/reference.md is current"; rm -f "$tmp"; else
	echo "docs/reference.md is stale: run bash test/gen_reference.sh"; rm -f "$tmp"; exit 1; fi
