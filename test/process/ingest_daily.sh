#!/usr/bin/env bash
# A DAILY alibaba_bss connector without billing_date is fanned out over the
# days of its billing cycle: one stream per connector, account and day, each
# with its own run, checkpoint, health row and withdrawals.  The mock serves
# a daily-<L>x<P> month day by day (Granularity=DAILY, BillingDate), a
# deterministic function of the cycle, the owner and the day.  In a cluster
# of its own (settle preloaded):
#  - settle.ingest_now pulls every day of every account: each day's lines
#    stored once with the mock's exact sums, the month's provider totals once
#    per account (with the last day); a re-pull is a no-op;
#  - a day the provider revises gets revisions for that day only; an item
#    dropped from one day is withdrawn, no other day's line is; a day whose
#    pass fails withdraws nothing;
#  - the launcher's pull workers pull the days concurrently, sharing the
#    AccessKey's rate: zero throttled, every line once; a pull worker killed
#    mid-pass (SIGTERM) leaves its day unwithdrawn and the others untouched,
#    and the resumed pass withdraws that day's dropped item alone.
set -uo pipefail
cd "$(dirname "$0")/../.."
. test/mock/lib.sh
mock_start
worker_cluster_start settle_daily 3600000 "settle.ingest_requests_per_second = 10
settle.max_pull_workers = 8
settle.worker_naptime_ms = 100
max_worker_processes = 16"
DB=settle_daily
stats() {	# stats PATH FIELD
	curl -s --cacert "$MOCK_CA" "$MOCK_URL/__stats$1" | python3 -c "import json,sys; print(json.load(sys.stdin)['$2'])"
}
expected() {	# expected DATASET CYCLE [OWNER]: day,lines,pretax,gross per day (the mock's own sums)
	curl -s --cacert "$MOCK_CA" "$MOCK_URL/__expected_daily/$1/$2${3:+/$3}"
}
stored() {	# stored CONNECTOR [OWNER]: the same from the current revisions of the lines stored
	q $DB "SELECT string_agg(d || ',' || n || ',' || pretax || ',' || gross, E'\n' ORDER BY d) FROM (
	         SELECT (b.charge_period_start AT TIME ZONE 'UTC')::date::text AS d, count(*) AS n,
	                sum(b.billed_cost) AS pretax, sum(b.list_cost) AS gross
	           FROM settle.bill_line_current b JOIN settle.connector c USING (connector_id)
	          WHERE c.name = '$1' AND b.withdrawal_reason IS NULL AND b.sub_account_id LIKE '${2:-11%}'
	          GROUP BY 1) s"
}
dsum() {	# dsum FIELD: the exact (decimal) sum of a CSV field on stdin
	python3 -c "import sys; from decimal import Decimal; print(sum((Decimal(l.split(',')[$1 - 1]) for l in sys.stdin if l.strip()), Decimal(0)))"
}
wait_runs() {	# wait_runs N CONNECTOR: until N runs of it ended
	for _ in $(seq 1 1200); do
		[ "$(q $DB "SELECT count(*) FROM settle.ingest_run r JOIN settle.connector c USING (connector_id) WHERE c.name = '$2' AND status <> 'running'")" -ge "$1" ] && return
		sleep 0.1
	done
}
# settle.ingest_now's connectors are disabled (the launcher leaves them alone);
# each has a cycle of its own, so that no two connectors share a line
newc() {	# newc NAME DATASET FAULT CONFIG-EXTRA [ENABLED]
	q $DB "INSERT INTO settle.connector (name, kind, endpoint, secret_name, config, enabled) VALUES
	  ('$1', 'alibaba_bss', '$MOCK_URL/m/$2/$3/', '${KEY:-bss_test}', '{\"granularity\": \"DAILY\", $4}', ${5:-false})" >/dev/null
}

# ---- settle.ingest_now: a payer and a member account, 31 days each
# daily-5x40 in 2026-10: days 1-9 of 10 lines, days 10-31 of 5 (200 lines an owner);
# 4 lines a page: 3 and 2 pages a day (142 pages), and the month's totals once an owner
# (the member account mapped like the payer's accounts: no line invalid)
q $DB "SET settle.reason = 'test setup'; SELECT settle.map_account('1300000000000001', 'R1', 'C2')" >/dev/null
newc dm daily-5x40 ok '"billing_cycle": "2026-10", "max_results": 4, "member_accounts": ["1300000000000001"]'
check "ingest_now: a run per account and day (2 x 31), all succeeded, 200 lines an owner" \
	"$(q $DB "SELECT count(*), count(*) FILTER (WHERE status = 'succeeded'), count(DISTINCT (account_id, billing_date)),
	                 min(billing_date), max(billing_date), sum(lines_new), sum(lines_invalid), sum(pages)
	            FROM settle.ingest_now('dm')")" \
	"62|62|62|2026-10-01|2026-10-31|400|0|144"
check "the payer's own lines: per day, the count and exact sums the mock served" \
	"$(stored dm)" "$(expected daily-5x40 2026-10 | sed '/^$/d')"
check "the member's lines: per day, the count and exact sums the mock served" \
	"$(stored dm 1300000000000001)" "$(expected daily-5x40 2026-10 1300000000000001 | sed '/^$/d')"
check "each line stored once; every line dated by its day, within the month" \
	"$(q $DB "SELECT count(*), count(DISTINCT line_key), count(*) FILTER (WHERE charge_period_end - charge_period_start = interval '1 day'
	                 AND billing_period_start = '2026-10-01') FROM settle.bill_line b JOIN settle.connector c USING (connector_id) WHERE c.name = 'dm'")" \
	"400|400|400"
check "every DescribeInstanceBill request asked for its run's day (Granularity DAILY, BillingDate)" \
	"$(q $DB "SELECT count(*), count(*) FILTER (WHERE p.request->'params'->>'Granularity' = 'DAILY'
	                 AND p.request->'params'->>'BillingDate' = r.billing_date::text
	                 AND p.request->>'scope' LIKE 'DescribeInstanceBill:2026-10:DAILY:' || r.billing_date || '%')
	            FROM settle.raw_page p JOIN settle.ingest_run r USING (ingest_run_id) JOIN settle.connector c ON c.connector_id = r.connector_id
	           WHERE c.name = 'dm' AND p.request->>'action' = 'DescribeInstanceBill'")" "142|142"
check "the month's provider totals: once per account, with the last day" \
	"$(q $DB "SELECT count(*), min(r.billing_date), max(r.billing_date)
	            FROM settle.raw_page p JOIN settle.ingest_run r USING (ingest_run_id) JOIN settle.connector c ON c.connector_id = r.connector_id
	           WHERE c.name = 'dm' AND p.request->>'action' = 'QueryBillOverview'")" "2|2026-10-31|2026-10-31"
check "the provider totals add up to the month's lines, per owner" \
	"$(q $DB "SELECT string_agg(coalesce(bill_owner_id, 'payer') || ':' || s, ' ' ORDER BY bill_owner_id NULLS FIRST) FROM (
	         SELECT bill_owner_id, sum(pretax_amount) s FROM settle.provider_total_current t JOIN settle.connector c USING (connector_id)
	          WHERE c.name = 'dm' GROUP BY 1) x")" \
	"payer:$(expected daily-5x40 2026-10 | dsum 3) 1300000000000001:$(expected daily-5x40 2026-10 1300000000000001 | dsum 3)"
check "a complete checkpoint per account and day, the day on it and in its scope" \
	"$(q $DB "SELECT count(*), count(*) FILTER (WHERE k.complete AND k.scope = 'DescribeInstanceBill:2026-10:DAILY:' || k.billing_date
	                   || coalesce(':owner=' || k.account_id, '')), count(DISTINCT (k.account_id, k.billing_date))
	            FROM settle.ingest_checkpoint k JOIN settle.connector c USING (connector_id) WHERE c.name = 'dm' AND k.scope LIKE 'Describe%'")" \
	"62|62|62"
check "an ingest_health row per account and day, each succeeded once" \
	"$(q $DB "SELECT count(*), count(DISTINCT (account_id, billing_date)), count(*) FILTER (WHERE last_status = 'succeeded' AND runs_24h = 1),
	                 min(billing_date), max(billing_date) FROM settle.ingest_health WHERE name = 'dm'")" \
	"62|62|62|2026-10-01|2026-10-31"
check "re-pull: 62 no-op runs (0 new, 0 revised, 400 unchanged, 0 withdrawn)" \
	"$(q $DB "SELECT count(*), count(*) FILTER (WHERE status = 'succeeded'), sum(lines_new), sum(lines_revised), sum(lines_unchanged), sum(lines_withdrawn) FROM settle.ingest_now('dm')")" \
	"62|62|0|0|400|0"

# ---- a day the provider revises: revisions for that day only
# daily-10x40 in 2026-09 (30 days): days 1-10 of 20 lines, 11-30 of 10 (400); from the
# second pull of day 7 on, its items 0 and 10 cost 0.01 more
newc rev daily-10x40 d07revise '"billing_cycle": "2026-09", "max_results": 8, "overview": false'
check "first pull: 30 days, 400 lines" "$(q $DB "SELECT count(*), sum(lines_new) FROM settle.ingest_now('rev')")" "30|400"
check "second pull: 2 revisions, all of them day 7's run" \
	"$(q $DB "SELECT sum(lines_revised), sum(lines_unchanged), string_agg(billing_date || ':' || lines_revised, ' ') FILTER (WHERE lines_revised > 0) FROM settle.ingest_now('rev')")" \
	"2|398|2026-09-07:2"
check "the revised lines are day 7's, each 0.01 more; no other day has a revision" \
	"$(q $DB "SELECT count(*), min((charge_period_start AT TIME ZONE 'UTC')::date), max((charge_period_start AT TIME ZONE 'UTC')::date),
	                 sum(billed_cost - (SELECT o.billed_cost FROM settle.bill_line o WHERE o.line_key = b.line_key AND o.revision = 1))
	            FROM settle.bill_line b JOIN settle.connector c USING (connector_id) WHERE c.name = 'rev' AND b.revision > 1")" \
	"2|2026-09-07|2026-09-07|0.0200"

# ---- an item dropped from one day: withdrawn, no other day's line is
# daily-5x40 in 2026-08 (31 days); from the second pull of day 5 on, its item 3 is gone
newc drop daily-5x40 d05drop '"billing_cycle": "2026-08", "max_results": 4, "overview": false'
check "first pull: 31 days, 200 lines" "$(q $DB "SELECT count(*), sum(lines_new) FROM settle.ingest_now('drop')")" "31|200"
check "second pull: day 5's run withdraws 1, no other run withdraws" \
	"$(q $DB "SELECT sum(lines_withdrawn), string_agg(billing_date || ':' || lines_withdrawn, ' ') FILTER (WHERE lines_withdrawn > 0), sum(lines_unchanged) FROM settle.ingest_now('drop')")" \
	"1|2026-08-05:1|199"
check "the withdrawn line is day 5's item 3; 199 lines stand, day 5 one short" \
	"$(q $DB "SELECT string_agg(resource_id || ' ' || (charge_period_start AT TIME ZONE 'UTC')::date || ' ' || billed_cost, ' ') FILTER (WHERE withdrawal_reason IS NOT NULL),
	                 count(*) FILTER (WHERE withdrawal_reason IS NULL),
	                 count(*) FILTER (WHERE withdrawal_reason IS NULL AND (charge_period_start AT TIME ZONE 'UTC')::date = '2026-08-05')
	            FROM settle.bill_line_current b JOIN settle.connector c USING (connector_id) WHERE c.name = 'drop'")" \
	"i-0004-05-00003 2026-08-05 0|199|9"
check "the withdrawal names day 5's scope" \
	"$(q $DB "SELECT withdrawal_reason LIKE 'not returned by a complete pull of DescribeInstanceBill:2026-08:DAILY:2026-08-05 (ingest run %)'
	            FROM settle.bill_line_current b JOIN settle.connector c USING (connector_id) WHERE c.name = 'drop' AND withdrawal_reason IS NOT NULL")" "t"
check "third pull: a no-op (0 withdrawn, 199 unchanged)" \
	"$(q $DB "SELECT sum(lines_new), sum(lines_revised), sum(lines_withdrawn), sum(lines_unchanged) FROM settle.ingest_now('drop')")" "0|0|0|199"

# ---- a day whose pass fails withdraws nothing
# from the second pull of day 5 on, its item 3 is gone and its pages after the first are cut off
newc fail daily-5x40 d05droptrunc '"billing_cycle": "2026-07", "max_results": 4, "overview": false'
check "first pull: 31 days, 200 lines" "$(q $DB "SELECT count(*), sum(lines_new) FROM settle.ingest_now('fail')")" "31|200"
check "second pull: day 5 fails (its second page is cut off: 22P02), the 30 others succeed, nothing withdrawn" \
	"$(q $DB "SELECT string_agg(billing_date || ':' || status || ':' || pages || ':' || error_sqlstate, ' ') FILTER (WHERE status <> 'succeeded'),
	                 count(*) FILTER (WHERE status = 'succeeded'), sum(lines_withdrawn) FROM settle.ingest_now('fail')")" \
	"2026-07-05:failed:1:22P02|30|0"
check "no withdrawal revision; day 5's 10 lines stand" \
	"$(q $DB "SELECT count(*) FILTER (WHERE withdrawal_reason IS NOT NULL), count(*) FILTER (WHERE (charge_period_start AT TIME ZONE 'UTC')::date = '2026-07-05')
	            FROM settle.bill_line_current b JOIN settle.connector c USING (connector_id) WHERE c.name = 'fail'")" "0|10"
check "day 5's checkpoint is mid-pass (1 page done), the others' complete" \
	"$(q $DB "SELECT string_agg(k.billing_date || ':' || k.pages_done, ' ') FILTER (WHERE NOT k.complete), count(*) FILTER (WHERE k.complete)
	            FROM settle.ingest_checkpoint k JOIN settle.connector c USING (connector_id) WHERE c.name = 'fail'")" "2026-07-05:1|30"
check "ingest_health: day 5 failed, the other days succeeded" \
	"$(q $DB "SELECT string_agg(billing_date || ':' || last_status, ' ') FILTER (WHERE last_status <> 'succeeded'), count(*) FILTER (WHERE last_status = 'succeeded') FROM settle.ingest_health WHERE name = 'fail'")" \
	"2026-07-05:failed|30"

# ---- the launcher: pull workers pull the days concurrently at the key's rate
# daily-4x60 in 2026-06 (30 days of 8 lines, 2 pages each) behind 10 requests/s
# and 150 ms a reply, with its own key: 61 requests (and the month's totals once)
# setup_db turns the rate off for the test database: this part wants it on
q $DB "ALTER DATABASE $DB RESET settle.ingest_requests_per_second" >/dev/null
KEY=bss_k1 newc wk daily-4x60 limit10lat150 '"billing_cycle": "2026-06", "max_results": 4' true
wait_runs 30 wk
check "30 runs by pull workers, one per day, all succeeded, every line once" \
	"$(q $DB "SELECT count(*), count(*) FILTER (WHERE status = 'succeeded'), count(DISTINCT billing_date), min(triggered_by), max(triggered_by), sum(lines_new), sum(retries),
	                 (SELECT count(*) || '/' || count(DISTINCT line_key) FROM settle.bill_line b WHERE b.connector_id = r.connector_id)
	            FROM settle.ingest_run r JOIN settle.connector c USING (connector_id) WHERE c.name = 'wk' GROUP BY r.connector_id")" \
	"30|30|30|worker|worker|240|0|240/240"
check "the workers' lines: per day, the count and exact sums the mock served" \
	"$(stored wk)" "$(expected daily-4x60 2026-06 | sed '/^$/d')"
check "the days were pulled concurrently (several requests in flight), none throttled" \
	"$([ "$(stats /m/daily-4x60/limit10lat150/ max_inflight)" -ge 2 ] && echo concurrent)|$(stats /m/daily-4x60/limit10lat150/ throttled)|$(stats /m/daily-4x60/limit10lat150/ requests)" \
	"concurrent|0|61"
check "ingest_health: 30 day rows, all succeeded" \
	"$(q $DB "SELECT count(*), count(*) FILTER (WHERE last_status = 'succeeded') FROM settle.ingest_health WHERE name = 'wk'")" "30|30"

# ---- a pull worker killed mid-pass (SIGTERM): its day withdraws nothing, the others are untouched
# daily-5x40 in 2026-05 (31 days; day 5 of 10 lines, 3 pages); from the second pull of
# day 5 on its item 3 is gone and its pages after the first take 2 s
KEY=bss_k2 newc kw daily-5x40 d05dropslow '"billing_cycle": "2026-05", "max_results": 4, "overview": false' true
wait_runs 31 kw
check "first pass by pull workers: 31 runs succeeded, 200 lines" \
	"$(q $DB "SELECT count(*) FILTER (WHERE status = 'succeeded'), sum(lines_new) FROM settle.ingest_run r JOIN settle.connector c USING (connector_id) WHERE c.name = 'kw'")" "31|200"
# day 5 alone is due again (its last run two days ago)
q $DB "UPDATE settle.ingest_run r SET started_at = started_at - interval '2 days' FROM settle.connector c
        WHERE c.connector_id = r.connector_id AND c.name = 'kw' AND r.billing_date = '2026-05-05'" >/dev/null
pid=""
for _ in $(seq 1 300); do
	pid=$(q $DB "SELECT r.backend_pid FROM settle.ingest_run r JOIN settle.connector c USING (connector_id)
	              WHERE c.name = 'kw' AND r.billing_date = '2026-05-05' AND r.status = 'running' AND r.pages >= 1")
	[ -n "$pid" ] && break
	sleep 0.05
done
# SIGTERM: the worker dies at once (its transfer is cut short); SIGKILL would
# restart the server, which may lose the pages the worker committed last
# (pull workers commit asynchronously) and with them the run row, making the
# stream due again (test/process/ingest_worker.sh kills with SIGKILL)
echo "     (day 5's pull worker: pid ${pid:-not found})"
kill -TERM "$pid" 2>/dev/null
# the launcher marks the run whose process is gone failed
for _ in $(seq 1 300); do
	[ "$(q $DB "SELECT count(*) FROM settle.ingest_run r JOIN settle.connector c USING (connector_id) WHERE c.name = 'kw' AND r.status = 'failed'" 2>/dev/null)" = 1 ] && break
	sleep 0.1
done
check "day 5's second run was killed after its first page: failed (57P01), nothing withdrawn" \
	"$(q $DB "SELECT string_agg(billing_date || ':' || status || ':' || error_sqlstate || ':' || lines_withdrawn, ' ') FILTER (WHERE status <> 'succeeded'),
	                 count(*) FILTER (WHERE status = 'succeeded'), sum(lines_withdrawn)
	            FROM settle.ingest_run r JOIN settle.connector c USING (connector_id) WHERE c.name = 'kw'")" \
	"2026-05-05:failed:57P01:0|31|0"
check "no withdrawal revision; day 5's checkpoint mid-pass, the 30 others complete" \
	"$(q $DB "SELECT (SELECT count(*) FROM settle.bill_line_current b WHERE b.connector_id = c.connector_id AND b.withdrawal_reason IS NOT NULL),
	                 string_agg(k.billing_date || ':' || k.pages_done, ' ') FILTER (WHERE NOT k.complete), count(*) FILTER (WHERE k.complete)
	            FROM settle.ingest_checkpoint k JOIN settle.connector c USING (connector_id) WHERE c.name = 'kw' GROUP BY c.connector_id")" \
	"0|2026-05-05:1|30"
# the resumed pass (settle.ingest_now, the connector disabled) re-reads the stored first
# page: it is whole, so its end withdraws day 5's item 3, and only it
q $DB "UPDATE settle.connector SET enabled = false WHERE name = 'kw'" >/dev/null
check "resumed: day 5's pass completes and withdraws its dropped item alone; the other days are no-ops" \
	"$(q $DB "SELECT count(*) FILTER (WHERE status = 'succeeded'), string_agg(billing_date || ':' || lines_withdrawn, ' ') FILTER (WHERE lines_withdrawn > 0), sum(lines_new), sum(lines_revised)
	            FROM settle.ingest_now('kw')")" "31|2026-05-05:1|0|0"
check "the withdrawn line is day 5's item 3; 199 lines stand" \
	"$(q $DB "SELECT string_agg(resource_id, ' ') FILTER (WHERE withdrawal_reason IS NOT NULL), count(*) FILTER (WHERE withdrawal_reason IS NULL)
	            FROM settle.bill_line_current b JOIN settle.connector c USING (connector_id) WHERE c.name = 'kw'")" "i-0004-05-00003|199"
finish
