#!/usr/bin/env bash
# Concurrent pulls at the provider's limit.  The mock enforces Alibaba's flow
# control (10 requests per second per AccessKey, Throttling.User beyond) with
# a 150 ms round trip.  In a cluster of its own (settle preloaded):
#  - three AccessKeys, each a connector with a payer and two member accounts
#    (nine streams): the launcher pulls them concurrently in pull workers,
#    several streams of one key in flight at once, while settle.ingest_now
#    pulls another connector with the first key; every request of a key
#    shares its one rate: zero throttling, zero retries, every line;
#  - the control: the same pulls without the shared rate
#    (settle.ingest_requests_per_second = 0) are throttled by the mock, so
#    the first part could fail;
#  - a pull worker's complete pass withdraws what the provider dropped while
#    another key's streams store their pages;
#  - settle.max_pull_workers bounds the pull workers running at once.
set -uo pipefail
cd "$(dirname "$0")/../.."
. test/mock/lib.sh
mock_start
worker_cluster_start settle_p 3600000 "settle.ingest_requests_per_second = 10
settle.max_pull_workers = 9
max_worker_processes = 16"
DB=settle_p
# setup_db turns the rate off for the test database: this test wants it on
q $DB "ALTER DATABASE $DB RESET settle.ingest_requests_per_second" >/dev/null
stats() {	# stats PATH FIELD
	curl -s --cacert "$MOCK_CA" "$MOCK_URL/__stats$1" | python3 -c "import json,sys; print(json.load(sys.stdin)['$2'])"
}
wait_runs() {	# wait_runs N CONNECTOR-NAME-LIKE: until N runs of those connectors ended
	for _ in $(seq 1 1200); do
		[ "$(q $DB "SELECT count(*) FROM settle.ingest_run r JOIN settle.connector c USING (connector_id) WHERE c.name LIKE '$2' AND status <> 'running'")" -ge "$1" ] && return
		sleep 0.1
	done
}
M='"1300000000000001", "1300000000000002"'

# ---- three keys, nine streams, one rate per key, and settle.ingest_now
q $DB "INSERT INTO settle.connector (name, kind, endpoint, secret_name, config, enabled) VALUES
  ('now1', 'alibaba_bss', '$MOCK_URL/m/members-3x205/limit10lat150/', 'bss_k1',
   '{\"billing_cycle\": \"2026-10\", \"max_results\": 10, \"member_accounts\": [$M]}', false)" >/dev/null
for k in 1 2 3; do
	q $DB "INSERT INTO settle.connector (name, kind, endpoint, secret_name, config) VALUES
	  ('key$k', 'alibaba_bss', '$MOCK_URL/m/members-3x20$k/limit10lat150/', 'bss_k$k',
	   '{\"billing_cycle\": \"2026-10\", \"max_results\": 10, \"member_accounts\": [$M]}')" >/dev/null
done
q $DB "SELECT count(*) FILTER (WHERE status = 'succeeded'), sum(retries), sum(lines_new) FROM settle.ingest_now('now1')" > "$MOCK_DIR/now1.out" &
now_pid=$!
wait_runs 9 'key%'
wait $now_pid
check "settle.ingest_now with key 1 meanwhile: three runs succeeded, zero retries, every line" "$(cat "$MOCK_DIR/now1.out")" "3|0|615"
check "nine runs, one per stream, all succeeded, every line (201, 202, 203 per account)" \
	"$(q $DB "SELECT count(*), count(*) FILTER (WHERE status = 'succeeded'), string_agg(DISTINCT c.name || ':' || r.lines_new, ' ')
	          FROM settle.ingest_run r JOIN settle.connector c USING (connector_id) WHERE c.name LIKE 'key%'")" \
	"9|9|key1:201 key2:202 key3:203"
check "pulled by pull workers, one run per account of each connector" \
	"$(q $DB "SELECT count(DISTINCT (connector_id, account_id)), min(triggered_by), max(triggered_by) FROM settle.ingest_run r JOIN settle.connector c USING (connector_id) WHERE c.name LIKE 'key%'")" "9|worker|worker"
# each stream: one QueryBillOverview and 21 pages of 10 lines
check "zero retries; 22 requests per stream" "$(q $DB "SELECT sum(retries), sum(requests) FROM settle.ingest_run")" "0|264"
check "settle.ingest_now's requests: zero throttled" "$(stats /m/members-3x205/limit10lat150/ throttled)" "0"
for k in 1 2 3; do
	p=/m/members-3x20$k/limit10lat150/
	check "key $k: zero throttled by the mock; several requests in flight at once" \
		"$(stats $p throttled)|$([ "$(stats $p max_inflight)" -ge 2 ] && echo concurrent || echo "max in flight $(stats $p max_inflight)")" "0|concurrent"
done
check "lines stored once: 3 x (201 + 202 + 203 + 205)" "$(q $DB "SELECT count(*), count(DISTINCT line_key) FROM settle.bill_line")" "2433|2433"

# ---- the control: without the shared rate the provider throttles
psql -X -q -d postgres -c "ALTER SYSTEM SET settle.ingest_requests_per_second = 0" -c "SELECT pg_reload_conf()" >/dev/null
sleep 0.5
q $DB "INSERT INTO settle.connector (name, kind, endpoint, secret_name, config) VALUES
  ('free', 'alibaba_bss', '$MOCK_URL/m/members-3x204/limit10lat150/', 'bss_k4',
   '{\"billing_cycle\": \"2026-10\", \"max_results\": 10, \"member_accounts\": [$M]}')" >/dev/null
wait_runs 3 'free'
check "without it: the mock throttled, the pulls retried" \
	"$([ "$(stats /m/members-3x204/limit10lat150/ throttled)" -gt 0 ] && echo throttled)|$(q $DB "SELECT sum(retries) > 0 FROM settle.ingest_run r JOIN settle.connector c USING (connector_id) WHERE c.name = 'free'")" \
	"throttled|t"

# ---- a pull worker's complete pass withdraws what the provider dropped,
# while the streams of another key store their pages (pull workers' pages
# lock only their line groups; the last page of a pass also those of the
# lines it withdraws)
q $DB "INSERT INTO settle.connector (name, kind, endpoint, secret_name, config) VALUES
  ('dropw', 'alibaba_bss', '$MOCK_URL/m/small/drop/', 'bss_k1', '{\"billing_cycle\": \"2026-10\", \"max_results\": 5, \"overview\": false}')" >/dev/null
wait_runs 1 'dropw'
# the month is due again (its last run two days ago): the worker's second pass
# finds item 3 gone, while a connector of another key pulls three streams
q $DB "UPDATE settle.ingest_run r SET started_at = started_at - interval '2 days' FROM settle.connector c
        WHERE c.connector_id = r.connector_id AND c.name = 'dropw'" >/dev/null
q $DB "INSERT INTO settle.connector (name, kind, endpoint, secret_name, config) VALUES
  ('busy', 'alibaba_bss', '$MOCK_URL/m/members-3x210/lat100/', 'bss_k2',
   '{\"billing_cycle\": \"2026-11\", \"max_results\": 10, \"overview\": false, \"member_accounts\": [$M]}')" >/dev/null
wait_runs 2 'dropw'
wait_runs 3 'busy'
check "pull worker, pass 1 of the dropping month: 14 new, 3 pages; pass 2: 13 unchanged, 1 withdrawn" \
	"$(q $DB "SELECT string_agg(status || ' ' || pages || ' ' || lines_new || ' ' || lines_unchanged || ' ' || lines_withdrawn, ', ' ORDER BY ingest_run_id)
	          FROM settle.ingest_run r JOIN settle.connector c USING (connector_id) WHERE c.name = 'dropw'")" \
	"succeeded 3 14 0 0, succeeded 3 0 13 1"
check "the withdrawal: revision 2 of item 3, zero amounts, the reason naming the run" \
	"$(q $DB "SELECT resource_id, revision, billed_cost, withdrawal_reason LIKE 'not returned by a complete pull of % (ingest run %)'
	          FROM settle.bill_line_current b JOIN settle.connector c USING (connector_id) WHERE c.name = 'dropw' AND revision > 1")" \
	"oss-small-004|2|0|t"
check "the busy key's three streams stored every line once, all succeeded" \
	"$(q $DB "SELECT count(*) FILTER (WHERE r.status = 'succeeded'), (SELECT count(*) || '/' || count(DISTINCT line_key) FROM settle.bill_line b JOIN settle.connector c USING (connector_id) WHERE c.name = 'busy')
	          FROM settle.ingest_run r JOIN settle.connector c USING (connector_id) WHERE c.name = 'busy'")" \
	"3|630/630"

# ---- settle.max_pull_workers bounds the pull workers
psql -X -q -d postgres -c "ALTER SYSTEM SET settle.max_pull_workers = 2" -c "SELECT pg_reload_conf()" >/dev/null
sleep 0.5
M3='"1300000000000001", "1300000000000002", "1300000000000003"'
q $DB "INSERT INTO settle.connector (name, kind, endpoint, secret_name, config) VALUES
  ('b1', 'alibaba_bss', '$MOCK_URL/m/members-4x30/lat100/', 'bss_test', '{\"billing_cycle\": \"2026-10\", \"max_results\": 6, \"member_accounts\": [$M3]}'),
  ('b2', 'alibaba_bss', '$MOCK_URL/m/members-4x31/lat100/', 'bss_test', '{\"billing_cycle\": \"2026-10\", \"max_results\": 6, \"member_accounts\": [$M3]}')" >/dev/null
most=0
for _ in $(seq 1 600); do
	n=$(q postgres "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'settle ingest worker'")
	[ "$n" -gt "$most" ] && most=$n
	[ "$(q $DB "SELECT count(*) FROM settle.ingest_run r JOIN settle.connector c USING (connector_id) WHERE c.name IN ('b1', 'b2') AND status <> 'running'")" -ge 8 ] && break
	sleep 0.05
done
check "eight streams pulled, at most two pull workers at a time (and two at some time)" \
	"$(q $DB "SELECT count(*) FILTER (WHERE status = 'succeeded') FROM settle.ingest_run r JOIN settle.connector c USING (connector_id) WHERE c.name IN ('b1', 'b2')")|$most" "8|2"
check "the mock saw at most two requests of each connector at once" \
	"$(( $(stats /m/members-4x30/lat100/ max_inflight) <= 2 && $(stats /m/members-4x31/lat100/ max_inflight) <= 2 ))" "1"
check "the launcher is one process throughout" "$(q postgres "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'settle ingest launcher'")" "1"
finish
