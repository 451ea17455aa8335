#!/usr/bin/env bash
# settle.import_payout_confirmations benchmark: importing a bank's CSV
# confirmation file of about 1, 2.5, 5 and 10 MB into a batch with one payout
# per record, against COPY ... FROM (FORMAT csv) of the same file, in one run.
#
#   bash test/dev.sh bash bench/confirmations.sh   # in a throwaway cluster, under the install lock
#   bash bench/confirmations.sh                    # the same (starts test/dev.sh itself)
#   REPS=5 bash bench/confirmations.sh             # repetitions per measure (default 3; the median is shown)
#   SIZES="0.5 1" bash bench/confirmations.sh      # other sizes in MB (the first is the per-MB reference)
#
# Setup (not measured), per size: a batch in its own period (2026-01 .. 04)
# with as many payouts as the file has records, made by
# test/process/payout_volume.sql (resellers, agreements, payees, locked runs,
# statements, the batch and its payouts inserted directly by the superuser:
# settle_period and create_payout_batch for 200,000 resellers would take far
# longer than the import).  Then the bank's file for that batch, written with
# COPY (FORMAT csv, HEADER): one record per payout, in an order unrelated to
# the batch's (md5 of the end-to-end id); columns end_to_end_id, reseller,
# bank_reference, status, amount, currency.  Per payout number g:
#   g % 5 = 3      named by reseller only (the rest by end-to-end id)
#   g % 10 = 0     bank reference with a comma (quoted in the file)
#   g % 50 = 7     amount 0.01 higher    -> amount_mismatch (exception)
#   g % 50 = 9     RJCT                  -> rejected (exception)
#   otherwise      ACSC, confirmed, booked or accepted -> confirmed, run paid
# Measured, inside the server (clock_timestamp around the statement, no client
# round trip):
#   (1) the import, as a settle_finance login, through the public function:
#       SELECT ... FROM settle.import_payout_confirmations(batch, pg_read_file(file));
#       in a transaction that is then rolled back (VACUUM between
#       repetitions), so every repetition confirms the same pending payouts;
#       its outcomes are checked against the file.
#   (2) baseline: COPY t FROM file (FORMAT csv, HEADER) into a temporary
#       table of six text columns.
# Prints per size: bytes, records, import ms, COPY ms, import/COPY, import ms
# per MB and that against the 1 MB file (1.00 everywhere is linear), and the
# per-MB ratio between consecutive sizes.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${PGPORT:-}" ]; then
	exec bash test/dev.sh bash bench/confirmations.sh "$@"
fi

reps=${REPS:-3}
db=settle_bench_confirmations
work=$(mktemp -d /tmp/settle-bench-conf.XXXXXX)
chmod 777 "$work"			# the server writes and reads the files
trap 'rm -rf "$work"' EXIT
psqlq() { psql -X -q -v ON_ERROR_STOP=1 "$@"; }

dropdb --if-exists "$db" >/dev/null 2>&1
createdb "$db"
psqlq -d "$db" -c 'SET client_min_messages = warning' -c 'CREATE EXTENSION settle CASCADE' \
	-c 'DROP ROLE IF EXISTS bench_conf_finance' \
	-c 'CREATE ROLE bench_conf_finance IN ROLE settle_finance, pg_read_server_files' \
	-c 'GRANT EXECUTE ON FUNCTION pg_read_file(text) TO bench_conf_finance'

sizes=${SIZES:-"1 2.5 5 10"}	# MB; the first is the per-MB reference
bytes_per_record=49		# about; the actual sizes are measured and used
month=0
echo "== setup: one batch per size, and its confirmation file"
for mb in $sizes; do
	month=$((month + 1))
	period=$(printf '2026-%02d' "$month")
	n=$(awk -v m="$mb" -v b="$bytes_per_record" 'BEGIN { printf "%d", m * 1048576 / b }')
	t0=$(date +%s)
	batch=$({ cat test/process/payout_volume.sql; echo 'SELECT :vol_batch;'; } |
		psqlq -d "$db" --single-transaction -At -v vol_period="$period" -v vol_payouts="$n" -f -)
	f="$work/conf_$mb.csv"
	psqlq -d "$db" <<-SQL
		COPY (SELECT CASE WHEN p.line_no % 5 <> 3 THEN p.end_to_end_id END AS end_to_end_id,
		             CASE WHEN p.line_no % 5 = 3 THEN p.reseller_code END AS reseller,
		             CASE WHEN p.line_no % 10 = 0 THEN format('BANK,%s', lpad(p.line_no::text, 9, '0'))
		                  ELSE format('BANK-%s', lpad(p.line_no::text, 9, '0')) END AS bank_reference,
		             CASE WHEN p.line_no % 50 = 9 THEN 'RJCT'
		                  ELSE (ARRAY['ACSC', 'confirmed', 'booked', 'accepted'])[1 + p.line_no % 4] END AS status,
		             CASE WHEN p.line_no % 50 = 7 THEN p.amount + 0.01 ELSE p.amount END AS amount,
		             p.currency
		        FROM settle.payout p WHERE p.batch_id = $batch
		       ORDER BY md5(p.end_to_end_id))
		  TO '$f' (FORMAT csv, HEADER);
	SQL
	chmod 644 "$f"
	echo "$mb $batch $n" >> "$work/batches.txt"
	echo "   $mb MB: batch $batch ($period), $n payouts; file $(stat -c %s "$f") bytes, $(($(wc -l < "$f") - 1)) records; setup $(($(date +%s) - t0)) s"
done
psqlq -d "$db" -c 'VACUUM ANALYZE'

echo "== measuring, median of $reps repetitions each"
while read -r mb batch n; do
	f="$work/conf_$mb.csv"
	# expected outcomes, from the payout numbers
	expect=$(awk -v n="$n" 'BEGIN {
		for (g = 1; g <= n; g++) { if (g % 50 == 7) m++; else if (g % 50 == 9) r++; else c++ }
		printf "%d %d %d", c, m, r }')
	for i in $(seq "$reps"); do
		psqlq -d "$db" -At -F ' ' <<-SQL
			CREATE TEMP TABLE copy_target (end_to_end_id text, reseller text, bank_reference text, status text,
			                               amount text, currency text);
			-- the baseline: COPY of the same file
			DO \$\$
			DECLARE
				t0 timestamptz;
				n bigint;
			BEGIN
				COPY copy_target FROM '$f' (FORMAT csv, HEADER);	-- untimed: page cache
				TRUNCATE copy_target;
				t0 := clock_timestamp();
				COPY copy_target FROM '$f' (FORMAT csv, HEADER);
				GET DIAGNOSTICS n = ROW_COUNT;
				PERFORM set_config('bench.copy', format('%s %s', extract(epoch FROM clock_timestamp() - t0) * 1000, n), false);
			END \$\$;
			SET ROLE bench_conf_finance;
			-- the import, rolled back (its timing and outcomes survive in settings)
			DO \$\$
			DECLARE
				t0 timestamptz;
				ms numeric;
				o text;
			BEGIN
				BEGIN
					t0 := clock_timestamp();
					SELECT format('%s %s %s %s', count(*), count(*) FILTER (WHERE outcome = 'confirmed'),
					              count(*) FILTER (WHERE outcome = 'amount_mismatch'), count(*) FILTER (WHERE outcome = 'rejected'))
					  INTO o
					  FROM settle.import_payout_confirmations($batch, pg_read_file('$f'));
					ms := extract(epoch FROM clock_timestamp() - t0) * 1000;
					RAISE EXCEPTION 'undo' USING ERRCODE = 'UNDO1';
				EXCEPTION WHEN SQLSTATE 'UNDO1' THEN
					NULL;	-- variables keep their values; settings made in the block are undone
				END;
				PERFORM set_config('bench.import', format('%s %s', ms, o), false);
			END \$\$;
			RESET ROLE;
			SELECT '$mb', (pg_stat_file('$f')).size, current_setting('bench.import'), current_setting('bench.copy');
		SQL
		psqlq -d "$db" -c 'VACUUM settle.payout, settle.run, settle.exception, settle.audit_log, settle.payout_batch'
	done > "$work/reps_$mb.txt"
	# size bytes import_ms records confirmed mismatches rejected copy_ms copy_rows
	if [ "$(awk -v e="$n $expect $n" '$4 " " $5 " " $6 " " $7 " " $9 != e' "$work/reps_$mb.txt" | wc -l)" != 0 ]; then
		echo "unexpected outcomes at $mb MB (want records, confirmed, mismatches, rejected, COPY rows = $n $expect $n):" >&2
		cat "$work/reps_$mb.txt" >&2
		exit 1
	fi
	mid=$(( (reps + 1) / 2 ))
	imp=$(awk '{ print $3 }' "$work/reps_$mb.txt" | sort -g | sed -n "${mid}p")
	cpy=$(awk '{ print $8 }' "$work/reps_$mb.txt" | sort -g | sed -n "${mid}p")
	echo "$mb $(awk 'NR == 1 { print $2, $4 }' "$work/reps_$mb.txt") $imp $cpy" >> "$work/results.txt"
	echo "   $mb MB: $(awk '{ printf "import %.0f ms, COPY %.1f ms", $4, $5 }' <(tail -1 "$work/results.txt")) ($n records: $expect confirmed, amount mismatches, rejected)"
done < "$work/batches.txt"
dropdb "$db"
psqlq -d postgres -c "DROP ROLE bench_conf_finance"

echo
echo "== settle.import_payout_confirmations vs COPY FROM (FORMAT csv), $(nproc) cores, median of $reps"
awk '
	NR == 1 { base = $4 / ($2 / 1048576) }
	{
		mbs = $2 / 1048576
		if (NR == 1) {
			printf "   %6s %10s %9s %11s %9s %12s %15s %14s\n", "size", "bytes", "records", "import ms", "COPY ms",
				"import/COPY", "import ms/MB", "per MB vs " $1 " MB"
		}
		printf "   %4s MB %10d %9d %11.0f %9.1f %12.0f %15.1f %14.2f\n", $1, $2, $3, $4, $5, $4 / $5, $4 / mbs,
			($4 / mbs) / base
		if (NR > 1)
			step = step sprintf("   per-MB time %s MB / %s MB: %.2f\n", $1, prev, ($4 / mbs) / prevpm)
		prev = $1; prevpm = $4 / mbs
	}
	END { printf "\n%s", step }' "$work/results.txt"
