#!/usr/bin/env bash
# Payout batch benchmark: settle.create_payout_batch (which also builds every
# registered file format once to record its hash) and settle.payout_file for
# pain.001 and CSV, at two batch sizes, to show how the cost grows with the
# number of payouts (linear: time per payout stays flat; quadratic: it grows
# with the size).
#
#   bash test/dev.sh bash bench/payout.sh          # in a throwaway cluster, under the install lock
#   bash bench/payout.sh                           # the same (starts test/dev.sh itself)
#   SIZES="2000 8000" REPS=3 bash bench/payout.sh  # payouts per batch (the first is the reference); repetitions
#
# Setup (not measured), per size: that many resellers with a locked EUR run
# and statement in their own period and a payee, made by
# test/process/payout_volume.sql with vol_no_batch (direct inserts by the
# superuser).  Measured, per size, in a transaction that is rolled back (so
# every repetition batches the same statements): create_payout_batch, then
# payout_file(batch, 'pain.001') and payout_file(batch, 'csv') of the batch
# it made; the best of REPS repetitions.  Baseline in the same run: the CSV
# file, a single string_agg (linear by construction).
# Prints per size: payouts, ms for each, µs per payout, and the ratio of the
# larger size's time to the reference size's time next to the ratio of the
# sizes (equal ratios: linear; the square of it: quadratic).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${PGPORT:-}" ]; then
	exec bash test/dev.sh bash bench/payout.sh "$@"
fi

reps=${REPS:-3}
sizes=(${SIZES:-2000 8000})
db=settle_bench_payout
psqlq() { command psql -X -q -v ON_ERROR_STOP=1 -d "$db" "$@"; }

dropdb --if-exists "$db" >/dev/null 2>&1
createdb "$db"
trap 'dropdb --if-exists "$db" >/dev/null 2>&1 || true' EXIT
psqlq -c 'SET client_min_messages = warning' -c 'CREATE EXTENSION settle CASCADE'
psqlq -c "BEGIN" -c "SET LOCAL settle.reason = 'bench'" \
	-c "SELECT settle.set_payout_setting('Operator Cloud Pte. Ltd.', 'DE89370400440532013000', 'COBADEFFXXX', 'DE')" -c "COMMIT" >/dev/null
month=0
declare -A create pain csv
for n in "${sizes[@]}"; do
	month=$((month + 1))
	period=$(printf '2025-%02d' "$month")
	psqlq --single-transaction -v vol_period="$period" -v vol_payouts="$n" -v vol_no_batch=1 \
		-f test/process/payout_volume.sql >/dev/null
	best_c=; best_p=; best_v=
	for _ in $(seq 1 "$reps"); do
		read -r c p v payouts < <(psqlq -At -F ' ' <<SQL
BEGIN;
SET LOCAL settle.reason = 'bench';
SELECT clock_timestamp() AS t0 \gset
SELECT batch_id AS b FROM settle.create_payout_batch('$period', 'EUR') \gset
SELECT clock_timestamp() AS t1 \gset
SELECT length(settle.payout_file(:b, 'pain.001')) AS lp \gset
SELECT clock_timestamp() AS t2 \gset
SELECT length(settle.payout_file(:b, 'csv')) AS lc \gset
SELECT clock_timestamp() AS t3 \gset
SELECT round(extract(epoch FROM :'t1'::timestamptz - :'t0'::timestamptz) * 1000, 1),
       round(extract(epoch FROM :'t2'::timestamptz - :'t1'::timestamptz) * 1000, 1),
       round(extract(epoch FROM :'t3'::timestamptz - :'t2'::timestamptz) * 1000, 1),
       (SELECT payouts FROM settle.payout_batch WHERE batch_id = :b);
ROLLBACK;
SQL
)
		[ "$payouts" = "$n" ] || { echo "FAIL: batch of $payouts payouts, expected $n" >&2; exit 1; }
		best_c=$(python3 -c "print(min(x for x in [$c, ${best_c:-$c}]))")
		best_p=$(python3 -c "print(min(x for x in [$p, ${best_p:-$p}]))")
		best_v=$(python3 -c "print(min(x for x in [$v, ${best_v:-$v}]))")
		psqlq -c 'VACUUM settle.payout_batch, settle.payout' >/dev/null
	done
	create[$n]=$best_c; pain[$n]=$best_p; csv[$n]=$best_v
done

printf '%9s %14s %14s %14s %14s %14s\n' payouts create_ms pain001_ms csv_ms 'create_us/pay' 'pain001_us/pay'
for n in "${sizes[@]}"; do
	python3 -c "
n=$n; c=${create[$n]}; p=${pain[$n]}; v=${csv[$n]}
print('%9d %14.1f %14.1f %14.1f %14.1f %14.1f' % (n, c, p, v, c*1000/n, p*1000/n))"
done
ref=${sizes[0]}
for n in "${sizes[@]:1}"; do
	python3 -c "
r=$n/$ref
print('size x%.1f (%d -> %d payouts): create_payout_batch x%.2f, pain.001 x%.2f, csv (baseline) x%.2f  [linear: x%.1f, quadratic: x%.1f]' % (
    r, $ref, $n, ${create[$n]}/${create[$ref]}, ${pain[$n]}/${pain[$ref]}, ${csv[$n]}/${csv[$ref]}, r, r*r))"
done
