#!/usr/bin/env bash
# settle.csv_parse benchmark: the C parser against COPY ... FROM (FORMAT csv)
# of the same file, at 1, 2.5, 5 and 10 MB, in one run.
#
#   bash test/dev.sh bash bench/csv.sh     # in a throwaway cluster, under the install lock
#   bash bench/csv.sh                      # the same (starts test/dev.sh itself)
#   REPS=9 bash bench/csv.sh               # repetitions per measure (default 5; the median is shown)
#
# Generates bank-confirmation files shaped like the ones
# settle.import_payout_confirmations reads (docs/payouts.md): a header, then
# end_to_end_id, reseller, bank_reference, status, amount, currency; one
# bank reference in ten holds a comma and one in seventeen holds quotes, so
# those fields are quoted with doubled quotes.  Then measures, inside the
# server (clock_timestamp around each statement, so no client round trip
# counts):
#   (1) SELECT count(*) FROM settle.csv_parse(pg_read_file(file));
#   (2) baseline: COPY t FROM file (FORMAT csv, HEADER) into a temporary table
#       of six text columns (truncated before each repetition).
# Both read the file from disk.  Checks that both see the same records (and,
# at 10 MB, the same fields: csv_parse's arrays EXCEPT ALL COPY's rows, both
# ways) and prints, per size, the ratio csv_parse / COPY and the time per MB
# against the 1 MB run (1.00 everywhere is linear).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${PGPORT:-}" ]; then
	exec bash test/dev.sh bash bench/csv.sh "$@"
fi

reps=${REPS:-5}
db=settle_bench_csv
work=$(mktemp -d /tmp/settle-bench-csv.XXXXXX)
chmod 777 "$work"			# the server writes and reads the files
trap 'rm -rf "$work"' EXIT
psqlq() { psql -X -q -v ON_ERROR_STOP=1 "$@"; }

dropdb --if-exists "$db" >/dev/null 2>&1
createdb "$db"
psqlq -d "$db" -c 'SET client_min_messages = warning' -c 'CREATE EXTENSION settle CASCADE'

sizes="1 2.5 5 10"
echo "== generating confirmation files ($sizes MB)"
for mb in $sizes; do
	target=$(awk -v m="$mb" 'BEGIN { printf "%d", m * 1048576 }')
	# rows are about 75 bytes: generate enough, then cut at the last line end before the target size
	psqlq -d "$db" <<-SQL
		COPY (SELECT format('B7-R%s-%s', 1000 + g % 5000, 200000 + g) AS end_to_end_id,
		             'reseller-' || (1000 + g % 5000) AS reseller,
		             CASE WHEN g % 10 = 0 THEN format('BANK,%s', lpad(g::text, 9, '0'))
		                  WHEN g % 17 = 0 THEN format('REF "%s" SEPA', g)
		                  ELSE format('BANK-%s', lpad(g::text, 9, '0')) END AS bank_reference,
		             (ARRAY['ACSC', 'confirmed', 'booked', 'RJCT'])[1 + g % 4] AS status,
		             ((g::bigint * 7919) % 10000000 / 100.0)::numeric(12, 2) AS amount,
		             (ARRAY['USD', 'EUR', 'JPY'])[1 + g % 3] AS currency
		        FROM generate_series(1, ($target / 60)::int) g)
		  TO '$work/full.csv' (FORMAT csv, HEADER);
	SQL
	head -c "$target" "$work/full.csv" | sed '$d' > "$work/conf_$mb.csv"
	chmod 644 "$work/conf_$mb.csv"
	echo "   $mb MB: $(stat -c %s "$work/conf_$mb.csv") bytes, $(wc -l < "$work/conf_$mb.csv") lines"
done
rm -f "$work/full.csv"

echo "== measuring, median of $reps repetitions each"
for mb in $sizes; do
	f="$work/conf_$mb.csv"
	psqlq -d "$db" -At -F ' ' <<-SQL
		CREATE TEMP TABLE copy_target (end_to_end_id text, reseller text, bank_reference text, status text,
		                               amount text, currency text);
		CREATE TEMP TABLE timing (what text, ms numeric, n bigint);
		DO \$\$
		DECLARE
			t0 timestamptz;
			n bigint;
		BEGIN
			-- one untimed run of each first (page cache, catalogue)
			PERFORM count(*) FROM settle.csv_parse(pg_read_file('$f'));
			COPY copy_target FROM '$f' (FORMAT csv, HEADER);
			FOR i IN 1 .. $reps LOOP
				TRUNCATE copy_target;
				t0 := clock_timestamp();
				SELECT count(*) INTO n FROM settle.csv_parse(pg_read_file('$f'));
				INSERT INTO timing VALUES ('csv_parse', extract(epoch FROM clock_timestamp() - t0) * 1000, n);
				t0 := clock_timestamp();
				COPY copy_target FROM '$f' (FORMAT csv, HEADER);
				GET DIAGNOSTICS n = ROW_COUNT;
				INSERT INTO timing VALUES ('copy', extract(epoch FROM clock_timestamp() - t0) * 1000, n);
			END LOOP;
		END \$\$;
		SELECT '$mb', (pg_stat_file('$f')).size,
		       (SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY ms) FROM timing WHERE what = 'csv_parse'),
		       (SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY ms) FROM timing WHERE what = 'copy'),
		       (SELECT max(n) FROM timing WHERE what = 'csv_parse'), (SELECT max(n) FROM timing WHERE what = 'copy');
		SELECT 'records csv_parse ' || (SELECT max(n) FROM timing WHERE what = 'csv_parse')
		       || ' = header + COPY rows ' || (SELECT max(n) FROM timing WHERE what = 'copy')
		 WHERE (SELECT max(n) FROM timing WHERE what = 'csv_parse') <> (SELECT max(n) FROM timing WHERE what = 'copy') + 1;
	SQL
done > "$work/results.txt"
if [ "$(awk 'NF != 6' "$work/results.txt" | wc -l)" != 0 ]; then
	echo "csv_parse and COPY disagree on the number of records:" >&2; cat "$work/results.txt" >&2; exit 1
fi

echo "== same fields as COPY (10 MB file, both ways, EXCEPT ALL)"
f="$work/conf_10.csv"
diff=$(psqlq -d "$db" -At <<-SQL
	CREATE TEMP TABLE copy_target (end_to_end_id text, reseller text, bank_reference text, status text,
	                               amount text, currency text);
	COPY copy_target FROM '$f' (FORMAT csv, HEADER);
	CREATE TEMP TABLE parsed AS SELECT r FROM settle.csv_parse(pg_read_file('$f')) r OFFSET 1;
	SELECT (SELECT count(*) FROM (SELECT r FROM parsed EXCEPT ALL
	                              SELECT ARRAY[end_to_end_id, reseller, bank_reference, status, amount, currency] FROM copy_target) a)
	     + (SELECT count(*) FROM (SELECT ARRAY[end_to_end_id, reseller, bank_reference, status, amount, currency] FROM copy_target
	                              EXCEPT ALL SELECT r FROM parsed) b);
SQL
)
echo "   records differing: $diff"
[ "$diff" = 0 ] || { echo "csv_parse and COPY read different fields" >&2; exit 1; }
dropdb "$db"

echo
echo "== settle.csv_parse vs COPY FROM (FORMAT csv), $(nproc) cores, median of $reps"
awk '
	NR == 1 { base = $3 / ($2 / 1048576) }
	{
		mbs = $2 / 1048576
		if (NR == 1) {
			printf "   %6s %10s %9s %13s %9s %15s %14s %14s\n", "size", "bytes", "records", "csv_parse ms", "COPY ms",
				"csv_parse/COPY", "csv_parse ms/MB", "per MB vs 1 MB"
		}
		printf "   %4s MB %10d %9d %13.1f %9.1f %15.2f %14.1f %14.2f\n", $1, $2, $5, $3, $4, $3 / $4, $3 / mbs,
			($3 / mbs) / base
		if (NR > 1)
			step = step sprintf("   per-MB time %s MB / %s MB: %.2f\n", $1, prev, ($3 / mbs) / prevpm)
		prev = $1; prevpm = $3 / mbs
	}
	END { printf "\n%s", step }' "$work/results.txt"
