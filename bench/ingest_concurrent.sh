#!/usr/bin/env bash
# Concurrent pulls against the provider's limit.  The mock enforces Alibaba's
# flow control (10 requests per second per AccessKey, Throttling.User beyond)
# and answers every call after 150 ms.  Four AccessKeys, 100 pages each
# (400 pages; of 300 lines, then of 100), pulled by the launcher's pull
# workers; the wall
# time is compared with the provider's floor (requests / aggregate limit =
# 400 / 40 per second = 10 s) and with the bound of sequential NextToken
# paging (one stream per key: 100 round trips of 150 ms = 15 s).  Three shapes
# of the same 400 pages:
#   single:  each key one account: 4 streams of 100 pages
#   members: each key a payer and 3 member accounts: 16 streams of 25 pages
#   daily:   each key one account whose month (a past one, of 28 to 31 days)
#            is a DAILY connector fanned out over its days: a stream per day,
#            100 pages in all (3 or 4 a day)
# Also reports throttled requests (mock) and retries (settle), which must be
# zero.  Not part of the tests.
#
#   bash bench/ingest_concurrent.sh                  # via the install lock, a cluster of its own
#   LATENCY_MS=250 bash bench/ingest_concurrent.sh
#   PAGE_LINES=300 bash bench/ingest_concurrent.sh   # one page size only
#   SHAPES=daily bash bench/ingest_concurrent.sh     # some shapes only (single members daily)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${SETTLE_BENCH_INSIDE:-}" ]; then
	export SETTLE_BENCH_INSIDE=1
	exec bash test/dev.sh bash bench/ingest_concurrent.sh
fi
. test/mock/lib.sh
LAT=${LATENCY_MS:-150}
RATE=10
KEYS=4
PAGES=100
SHAPES=${SHAPES:-single members daily}
mock_start
worker_cluster_start settle_bench_c 3600000 "settle.ingest_requests_per_second = $RATE
settle.max_pull_workers = 16
settle.worker_naptime_ms = 100
max_worker_processes = 24
shared_buffers = 512MB
max_wal_size = 4GB
checkpoint_timeout = 30min"
DB=settle_bench_c
q $DB "ALTER DATABASE $DB RESET settle.ingest_requests_per_second" >/dev/null
FAULT=limit${RATE}lat${LAT}
PM_PID=$(head -1 "$PGD/postmaster.pid")
# CPU seconds (x100) used so far by a process and its descendants, the ended ones included
cpu() {
	python3 - "$1" <<'PY'
import os, sys
tick = os.sysconf('SC_CLK_TCK')
def stat(p):
    with open('/proc/%s/stat' % p) as f:
        return f.read().rsplit(')', 1)[1].split()
kids = {}
for p in os.listdir('/proc'):
    if p.isdigit():
        try:
            kids.setdefault(stat(p)[1], []).append(p)
        except OSError:
            pass
def tree(p):
    try:
        s = stat(p)
    except OSError:
        return 0
    return sum(int(x) for x in s[11:15]) + sum(tree(k) for k in kids.get(p, []))
print(tree(sys.argv[1]) * 100 // tick)
PY
}
stats() { curl -s --cacert "$MOCK_CA" "$MOCK_URL/__stats$1" | python3 -c "import json,sys; print(json.load(sys.stdin)['$2'])"; }

cycle_of() {	# cycle_of N [YEAR]: the N-th month from January of YEAR (2026)
	printf '20%02d-%02d' $((${2:-26} + $1 / 12)) $(($1 % 12 + 1))
}

run_shape() {	# run_shape NAME DATASET LINES MEMBERS-JSON FIRST-CYCLE [MORE-CONFIG YEAR]: prints one result line
	local shape=$1 ds=$2 lines=$3 members=$4 cyc=$5 more=${6:-} year=${7:-26} k t0 t1
	for k in $(seq 1 $KEYS); do
		# a billing cycle per key and run: distinct lines, the same pages
		cyc=$((cyc + 1))
		q $DB "INSERT INTO settle.connector (name, kind, endpoint, secret_name, config, enabled) VALUES
		  ('$shape$k', 'alibaba_bss', '$MOCK_URL/m/$ds/$FAULT/', 'bss_k$k',
		   '{\"billing_cycle\": \"$(cycle_of $cyc $year)\", \"max_results\": $lines,
		     \"overview\": false, \"member_accounts\": $members $more}', false)" >/dev/null
	done
	# a stream per account (and day of a DAILY fan-out)
	local streams
	streams=$(q $DB "SELECT sum((1 + jsonb_array_length(config->'member_accounts'))
	                            * greatest(1, (SELECT count(*) FROM settle.connector_days(kind, config))))
	                   FROM settle.connector WHERE name LIKE '$shape%'")
	local pc0 mc0
	pc0=$(cpu "$PM_PID"); mc0=$(cpu "$MOCK_PID")
	t0=$(date +%s%N)
	local enabled_at
	enabled_at=$(q $DB "UPDATE settle.connector SET enabled = true WHERE name LIKE '$shape%' RETURNING clock_timestamp()" | head -1)
	# wait for every stream's run to end, polling from one session (a psql
	# per poll would start a backend 50 times a second on the measured cores)
	q $DB "DO \$\$ BEGIN
		FOR i IN 1..6000 LOOP
			EXIT WHEN (SELECT count(*) FROM settle.ingest_run r JOIN settle.connector c USING (connector_id)
			            WHERE c.name LIKE '$shape%' AND status <> 'running') >= $streams;
			PERFORM pg_sleep(0.02);
		END LOOP; END \$\$" >/dev/null
	t1=$(date +%s%N)
	local pc1 mc1
	pc1=$(cpu "$PM_PID"); mc1=$(cpu "$MOCK_PID")
	q $DB "UPDATE settle.connector SET enabled = false WHERE name LIKE '$shape%'" >/dev/null
	local res
	res=$(q $DB "SELECT count(*) FILTER (WHERE status = 'succeeded'), sum(requests), sum(retries),
	                    sum(lines_seen) || ' seen, ' || sum(lines_new) || ' new, ' || sum(lines_unchanged) || ' unchanged',
	                    round(extract(epoch FROM max(finished_at) - min(started_at)) * 1000)
	               FROM settle.ingest_run r JOIN settle.connector c USING (connector_id) WHERE c.name LIKE '$shape%'")
	# where the time goes, per key (on stderr): the first request after enabling, the
	# requests' span, the gaps between a key's requests, and per page of a stream the
	# reply's latency and the time from a reply to the stream's next request (store, commit)
	q $DB "WITH p AS (
	         SELECT c.name, p.ingest_run_id, p.requested_at, p.received_at,
	                lead(p.requested_at) OVER (PARTITION BY p.ingest_run_id ORDER BY p.requested_at) AS next_req,
	                lead(p.requested_at) OVER (PARTITION BY c.name ORDER BY p.requested_at) AS key_next
	           FROM settle.raw_page p JOIN settle.connector c USING (connector_id) WHERE c.name LIKE '$shape%')
	       SELECT '  $shape ' || name || ': first request +' || round(extract(epoch FROM min(requested_at) - '$enabled_at'::timestamptz)::numeric, 2)
	              || ' s, span ' || round(extract(epoch FROM max(requested_at) - min(requested_at))::numeric, 2)
	              || ' s, key gap avg ' || round(avg(extract(epoch FROM key_next - requested_at)) * 1000)
	              || ' max ' || round(max(extract(epoch FROM key_next - requested_at)) * 1000)
	              || ' ms, reply ' || round(avg(extract(epoch FROM received_at - requested_at)) * 1000)
	              || ' ms, reply to next request ' || round(avg(extract(epoch FROM next_req - received_at)) * 1000) || ' ms'
	         FROM p GROUP BY name ORDER BY name" >&2
	echo "$shape|$lines|$streams|$res|$(( (t1 - t0) / 1000000 ))|$(stats /m/$ds/$FAULT/ throttled)|$((pc1 - pc0))|$((mc1 - mc0))"
}

echo "load before: $(uptime)"
results=()
cycles=0	# run_shape runs in a subshell: the caller numbers the cycles
dcycles=0	# the daily shape's, in 2025
for L in ${PAGE_LINES:-300 100}; do
	n=$((PAGES * L))
	# warm the mock's page caches (it builds every page on first use), unlimited
	q $DB "INSERT INTO settle.connector (name, kind, endpoint, secret_name, config, enabled) VALUES
	  ('warm_s$L', 'alibaba_bss', '$MOCK_URL/m/bench-$n/ok/', 'bss_test', '{\"billing_cycle\": \"2026-01\", \"max_results\": $L, \"overview\": false}', false),
	  ('warm_m$L', 'alibaba_bss', '$MOCK_URL/m/members-4x$((n / 4))/ok/', 'bss_test', '{\"billing_cycle\": \"2026-01\", \"max_results\": $L, \"overview\": false,
	    \"member_accounts\": [\"1300000000000001\", \"1300000000000002\", \"1300000000000003\"]}', false)" >/dev/null
	psql -X -q -d $DB -c "SET settle.ingest_requests_per_second = 0" -c "SELECT count(*) FROM settle.ingest_now('warm_s$L')" \
		-c "SELECT count(*) FROM settle.ingest_now('warm_m$L')" >/dev/null
	[[ " $SHAPES " == *" single "* ]] && results+=("$(run_shape single_$L bench-$n $L '[]' $cycles)")
	cycles=$((cycles + KEYS))
	[[ " $SHAPES " == *" members "* ]] && results+=("$(run_shape members_$L members-4x$((n / 4)) $L '["1300000000000001", "1300000000000002", "1300000000000003"]' $cycles)")
	cycles=$((cycles + KEYS))
	# daily: past months (2025), every day of them; the mock builds each day's
	# items on first use: built here, before the clock starts
	for k in $(seq 1 $KEYS); do
		curl -s --cacert "$MOCK_CA" "$MOCK_URL/__expected_daily/daily-${L}x$PAGES/$(cycle_of $((dcycles + k)) 25)" >/dev/null
	done
	[[ " $SHAPES " == *" daily "* ]] && results+=("$(run_shape daily_$L daily-${L}x$PAGES $L '[]' $dcycles ', "granularity": "DAILY"' 25)")
	dcycles=$((dcycles + KEYS))
done
echo "load after:  $(uptime)"
python3 - "$LAT" "$RATE" "$KEYS" "$PAGES" "${results[@]}" <<'PY'
import os, sys
lat, rate, keys, pages = (int(x) for x in sys.argv[1:5])
floor = keys * pages / (keys * rate)
print("mock: %d requests/s per AccessKey enforced (Throttling.User beyond), %d ms per reply; %d keys x %d pages"
      % (rate, lat, keys, pages))
print("provider floor (requests / aggregate limit): %d / %d per s = %.2f s" % (keys * pages, keys * rate, floor))
for line in sys.argv[5:]:
    shape, lines, streams, ok, req, retries, nlines, pull_ms, wall_ms, throttled, pg_cpu, mock_cpu = line.split('|')
    streams = int(streams)
    per_stream = keys * pages / streams
    seq = per_stream * lat / 1000.0
    print("%-12s %3s lines/page, %3d streams (%3.0f pages each; sequential paging bound %.2f s): %s/%d runs succeeded,"
          " %s requests, %s lines, %s retries, %s throttled"
          % (shape.split('_')[0], lines, streams, per_stream, seq, ok, streams, req, nlines, retries, throttled))
    print("             wall %.2f s = %.2fx the floor (first run start to last run end: %.2f s = %.2fx)"
          % (int(wall_ms) / 1000.0, int(wall_ms) / 1000.0 / floor, int(pull_ms) / 1000.0, int(pull_ms) / 1000.0 / floor))
    print("             CPU: server %.1f s, mock %.1f s (%.0f%% of %d cores over the wall)"
          % (int(pg_cpu) / 100.0, int(mock_cpu) / 100.0,
             100.0 * (int(pg_cpu) + int(mock_cpu)) / 100.0 / (int(wall_ms) / 1000.0) / os.cpu_count(), os.cpu_count()))
PY
