#!/usr/bin/env bash
# Runs inside pg_virtualenv (PGHOST/PGPORT/PGUSER set): every suite, counted.
set -uo pipefail
cd "$(dirname "$0")/.."
suites=("$@")
[ ${#suites[@]} -gt 0 ] || suites=(regress pgtap isolation process citus)
pass=0; fail=0; skipped=0; failed=()
log=$(mktemp -d /tmp/settle-tests.XXXXXX)

count_regress() {	# $1 = output file of pg_regress, $2 = its exit status
	local ok bad
	ok=$(grep -cE '\.\.\. ok' "$1" || true)
	bad=$(grep -cE '\.\.\. FAILED|failed \(ignored\)' "$1" || true)
	# a run that failed without naming a test (missing expected file, crash) counts once
	if [ "$2" != 0 ] && [ "$bad" = 0 ]; then bad=1; failed+=("$1"); fi
	pass=$((pass + ok)); fail=$((fail + bad))
	[ "$bad" = 0 ] || failed+=("$(grep -E '\.\.\. FAILED' "$1" | awk '{print $2}' | tr '\n' ' ')")
}

for s in "${suites[@]}"; do
	case "$s" in
	regress)
		echo "== pg_regress (sql/)"
		make -s installcheck ISOLATION= 2>&1 | tee "$log/regress.out"
		count_regress "$log/regress.out" "${PIPESTATUS[0]}"
		[ -f regression.diffs ] && head -200 regression.diffs
		;;
	isolation)
		echo "== isolation (test/specs/)"
		mkdir -p test/output_iso
		make -s installcheck REGRESS= 2>&1 | tee "$log/isolation.out"
		count_regress "$log/isolation.out" "${PIPESTATUS[0]}"
		[ -f test/output_iso/regression.diffs ] && head -200 test/output_iso/regression.diffs
		;;
	pgtap)
		echo "== pgTAP (test/pgtap/)"
		dropdb --if-exists settle_tap >/dev/null 2>&1
		createdb settle_tap
		psql -q -X -v ON_ERROR_STOP=1 -d settle_tap \
			-c 'CREATE EXTENSION settle CASCADE' -c 'CREATE EXTENSION pgtap' >/dev/null
		for f in test/pgtap/*.sql; do
			if pg_prove -q -d settle_tap "$f" >"$log/tap.out" 2>&1; then
				pass=$((pass + 1)); echo "ok   $f"
			else
				fail=$((fail + 1)); failed+=("$f"); echo "FAIL $f"; cat "$log/tap.out"
			fi
		done
		;;
	process)
		echo "== process-level (test/process/)"
		for f in test/process/*.sh; do
			[ -e "$f" ] || continue
			if timeout 600 bash "$f" >"$log/proc.out" 2>&1; then
				pass=$((pass + 1)); echo "ok   $f"
			else
				fail=$((fail + 1)); failed+=("$f"); echo "FAIL $f"; tail -50 "$log/proc.out"
			fi
		done
		;;
	citus)
		# its own coordinator and two workers; exit 77: Citus is not installed (skipped, not passed)
		echo "== Citus (test/citus/run.sh)"
		timeout 900 bash test/citus/run.sh >"$log/citus.out" 2>&1
		rc=$?
		if [ "$rc" = 77 ]; then
			skipped=$((skipped + 1)); echo "skip test/citus/run.sh: $(grep -m1 '^SKIPPED' "$log/citus.out")"
		elif [ "$rc" = 0 ]; then
			pass=$((pass + 1)); echo "ok   test/citus/run.sh ($(tail -1 "$log/citus.out"))"
		else
			fail=$((fail + 1)); failed+=(test/citus/run.sh); echo "FAIL test/citus/run.sh"; grep -v '^ok' "$log/citus.out" | tail -50
		fi
		;;
	*) echo "unknown suite $s" >&2; exit 2 ;;
	esac
done
rm -rf "$log"
[ ${#failed[@]} = 0 ] || echo "failed: ${failed[*]}"
if [ "$skipped" -gt 0 ]; then echo "$pass passed, $fail failed, $skipped skipped"; else echo "$pass passed, $fail failed"; fi
[ "$fail" = 0 ]
