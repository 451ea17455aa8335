#!/usr/bin/env bash
# Ingestion benchmark: lines per second end to end from the local
# mock (pages of 300 realistic ~1 KB items: fetch over TLS, stage the raw
# page, parse exact decimals, normalize, validate, dedup, insert) versus the
# obvious SQL path on the same pages (COPY the raw pages into a table, then
# jsonb_array_elements into lines), in one run.  Prints both rates and the
# ratio.  Not part of the tests.
#
#   bash bench/ingest.sh            # via the install lock and a throwaway cluster
#   N=200000 bash bench/ingest.sh
#   SETTLE_BENCH_PERF=1 bash bench/ingest.sh   # plus a system-wide perf profile of the pull
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${SETTLE_BENCH_INSIDE:-}" ]; then
	export SETTLE_BENCH_INSIDE=1
	# the settle benchmark's server settings, for both paths
	export SETTLE_SERVER_OPTS="-o shared_buffers=1GB -o max_wal_size=4GB -o checkpoint_timeout=30min -o wal_buffers=64MB"
	exec bash test/dev.sh bash bench/ingest.sh
fi
. test/mock/lib.sh
mock_start
N=${N:-100000}
setup_db settle_bench_warm >/dev/null
setup_db settle_bench >/dev/null
psql -X -q -d postgres -c "ALTER SYSTEM SET settle.secret_file = '$SECRET_FILE'" -c "SELECT pg_reload_conf()" >/dev/null
sleep 0.5
for db in settle_bench_warm settle_bench; do
	q $db "INSERT INTO settle.connector (name, kind, endpoint, secret_name, config) VALUES
	  ('bench', 'alibaba_bss', '$MOCK_URL/m/bench-$N/ok/', 'bss_test', '{\"billing_cycle\": \"2026-10\", \"max_results\": 300, \"overview\": false}')" >/dev/null
done
# warm the mock: it builds and caches every page on the first pull
q settle_bench_warm "SELECT status FROM settle.ingest_now('bench')" >/dev/null

if [ -n "${SETTLE_BENCH_PERF:-}" ] && command -v perf >/dev/null; then
	perf record -q -a -o "$MOCK_DIR/perf.data" 2>/dev/null &
	perf_pid=$!
	sleep 0.5
fi
t0=$(date +%s%N)
res=$(q settle_bench "SELECT status, lines_new, pages FROM settle.ingest_now('bench')")
t1=$(date +%s%N)
settle_ms=$(( (t1 - t0) / 1000000 ))
if [ -n "${perf_pid:-}" ]; then
	kill -INT "$perf_pid"; wait "$perf_pid" || true
	perf report -i "$MOCK_DIR/perf.data" --stdio --no-children --sort ${PERF_SORT:-comm,dso,symbol} --percent-limit ${PERF_LIMIT:-0.7} 2>/dev/null \
		| grep -v '^#' | grep -v '^$' | head -60
fi
avg=$(q settle_bench "SELECT round(avg(octet_length(body)) / 300) FROM settle.raw_page")

# the obvious path on the same pages
psql -X -q -d settle_bench -c "\\copy (SELECT convert_from(body, 'UTF8') FROM settle.raw_page ORDER BY raw_page_id) TO '$MOCK_DIR/pages.txt'"
chmod 644 "$MOCK_DIR/pages.txt" 2>/dev/null || true
q settle_bench "CREATE TABLE obvious_page (body jsonb);
CREATE TABLE obvious_line (line_key text, billing_account_id text, product_code text, item text,
  region text, currency text, list_cost numeric, discount numeric, coupons numeric, billed_cost numeric,
  amount_paid numeric, tags text, PRIMARY KEY (line_key))" >/dev/null
t0=$(date +%s%N)
psql -X -q -d settle_bench -v ON_ERROR_STOP=1 <<SQL
\\copy obvious_page FROM '$MOCK_DIR/pages.txt'
INSERT INTO obvious_line
SELECT concat_ws('/', e->>'BillAccountID', e->>'OwnerID', e->>'ProductCode', e->>'InstanceID',
                 e->>'BillingItemCode', e->>'SubscriptionType', e->>'Item'),
       e->>'BillAccountID', e->>'ProductCode', e->>'Item', btrim(e->>'Region', E' \t\n'),
       e->>'Currency', (e->>'PretaxGrossAmount')::numeric, (e->>'InvoiceDiscount')::numeric,
       (e->>'DeductedByCoupons')::numeric, (e->>'PretaxAmount')::numeric, (e->>'PaymentAmount')::numeric,
       e->>'Tag'
  FROM obvious_page p, jsonb_array_elements(p.body->'Data'->'Items') e;
SQL
t1=$(date +%s%N)
obvious_ms=$(( (t1 - t0) / 1000000 ))
check "bench pull succeeded" "$res" "succeeded|$N|$(( (N + 299) / 300 ))"
check "obvious path produced the same number of lines" "$(q settle_bench "SELECT count(*) FROM obvious_line")" "$N"
python3 - "$N" "$settle_ms" "$obvious_ms" "$avg" <<'PY'
import sys
n, s, o, avg = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
print("lines: %d, average item size: %s bytes" % (n, avg))
print("settle.ingest_now (fetch over TLS + stage + normalize + validate + insert): %d ms = %.0f lines/s" % (s, n * 1000.0 / s))
print("obvious SQL path (COPY pages + jsonb_array_elements insert):                %d ms = %.0f lines/s" % (o, n * 1000.0 / o))
print("ratio settle / obvious: %.2fx" % (o / s))
PY
