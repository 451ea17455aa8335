#!/usr/bin/env bash
# Every fault mode of the mock endpoint ends as it should: retried to success
# (5xx, 429, Throttling.User, timeout, connection reset), or a failed run with
# HTTP status, SQLSTATE and the provider's Code/Message/RequestId recorded and
# never a partial page (truncated JSON, wrong content type, invalid NextToken,
# 50 MB body, bad signature, unknown CA, http refused, missing secret, cancel).
# Ends with the secret-leak check: server log, every settle table, pg_dump
# and pg_stat_activity never contain the secret.
set -uo pipefail
cd "$(dirname "$0")/../.."
. test/mock/lib.sh
mock_start
DB=settle_ingest_faults
setup_db $DB
psql -X -q -d postgres -c "ALTER SYSTEM SET settle.secret_file = '$SECRET_FILE'" -c "SELECT pg_reload_conf()" >/dev/null
sleep 0.5

conn() {	# conn NAME PATH [SECRET] [CONFIG]
	q $DB "INSERT INTO settle.connector (name, kind, endpoint, secret_name, config) VALUES
	 ('$1', 'alibaba_bss', '$MOCK_URL$2', '${3:-bss_test}', '${4:-{\"billing_cycle\": \"2026-10\", \"max_results\": 5\}}')" >/dev/null
}
# lines are deduplicated across connectors (same natural keys), so "what a
# connector stored" is counted on its raw pages and runs.
pages_of() { q $DB "SELECT count(*) FILTER (WHERE request->>'action' = 'DescribeInstanceBill') FROM settle.raw_page r JOIN settle.connector c USING (connector_id) WHERE c.name = '$1'"; }
nodupes() { q $DB "SELECT count(*), (SELECT count(*) FROM (SELECT line_key, content_hash FROM settle.bill_line GROUP BY 1, 2 HAVING count(*) > 1) d) FROM settle.bill_line"; }

# transient faults: retried to success
for f in e500x2 e503x2 throttlex2 e429x2; do
	conn $f /m/small/$f/
	check "$f: retried to success" \
		"$(q $DB "SELECT status, retries, requests, pages, lines_seen FROM settle.ingest_now('$f')")" "succeeded|2|6|4|14"
	check "$f: mock saw 6 requests" "$(mock_requests /m/small/$f/)" "6"
done
conn slowx1 /m/small/slowx1/
check "slower than the timeout: retried" \
	"$(q $DB "SET settle.http_timeout_ms = 1000; SELECT status, retries, pages FROM settle.ingest_now('slowx1')")" "succeeded|1|4"
conn resetx1 /m/small/resetx1/
check "connection reset mid-body: retried" \
	"$(q $DB "SELECT status, retries, pages, lines_seen FROM settle.ingest_now('resetx1')")" "succeeded|1|4|14"

# persistent provider failure: failed run with the provider's error
conn e503always /m/small/e503always/
check "503 every time: failed after 5 attempts with provider error" \
	"$(q $DB "SELECT status, requests, retries, http_status, error_sqlstate, provider_code, provider_request_id LIKE 'MOCK-ERR-%', provider_message FROM settle.ingest_now('e503always')")" \
	"failed|5|4|503|57P03|ServiceUnavailable|t|The request has failed due to a temporary failure of the server."

# data faults: failed run, committed pages stay, the bad page is absent
conn truncated /m/small/truncated/
check "truncated JSON: failed run 22P02" \
	"$(q $DB "SELECT status, error_sqlstate, pages, lines_seen, http_status FROM settle.ingest_now('truncated')")" "failed|22P02|2|5|200"
check "truncated: only the whole first page stored" "$(pages_of truncated)" "1"
check "truncated: the unparsable page was tried 5 times (overview + page 1 + 5 attempts)" \
	"$(q $DB "SELECT r.retries, r.requests FROM settle.ingest_run r JOIN settle.connector c USING (connector_id) WHERE c.name = 'truncated'")|$(mock_requests /m/small/truncated/)" "4|7|7"
check "truncated: checkpoint at page 1" \
	"$(q $DB "SELECT k.pages_done, k.complete, k.next_token IS NOT NULL FROM settle.ingest_checkpoint k JOIN settle.connector c USING (connector_id) WHERE c.name = 'truncated' AND scope LIKE 'Describe%'")" "1|f|t"
conn ctype /m/small/ctype/
check "wrong content type: failed run 22000" \
	"$(q $DB "SELECT status, error_sqlstate, pages FROM settle.ingest_now('ctype')")" "failed|22000|2"
check "wrong content type: first page only" "$(pages_of ctype)" "1"
conn badtoken /m/small/badtoken/
check "invalid NextToken: failed, not retried, provider code kept" \
	"$(q $DB "SELECT status, error_sqlstate, http_status, provider_code, retries, requests FROM settle.ingest_now('badtoken')")" \
	"failed|22023|400|InvalidParameter|0|3"
check "resume after fixing: ingest_reset clears the checkpoint" "$(q $DB "SELECT settle.ingest_reset('badtoken')")" "2"
conn repeat /m/small/repeat/
check "repeated page: no duplicates" \
	"$(q $DB "SELECT status, lines_seen, lines_new + lines_unchanged FROM settle.ingest_now('repeat')")" "succeeded|19|19"
check "repeated page: 14 lines, no duplicates in bill_line" "$(nodupes)" "14|0"
conn big /m/small/big/
check "50 MB body: refused by the size limit (54000)" \
	"$(q $DB "SELECT status, error_sqlstate, retries, pages FROM settle.ingest_now('big')")" "failed|54000|0|1"
check "50 MB body: nothing stored for it" "$(pages_of big)" "0"

# authentication: wrong secret -> SignatureDoesNotMatch, no retry
conn wrongsig /m/small/ok/ bss_wrong
check "bad signature: failed 28000, one request" \
	"$(q $DB "SELECT status, error_sqlstate, http_status, provider_code, requests FROM settle.ingest_now('wrongsig')")" \
	"failed|28000|400|SignatureDoesNotMatch|1"
conn nosecret /m/small/ok/ no_such_secret
check "undefined secret: failed 42704" \
	"$(q $DB "SELECT status, error_sqlstate, error_message FROM settle.ingest_now('nosecret')")" \
	"failed|42704|secret \"no_such_secret\" is not defined"

# TLS: an unknown CA is refused with a clear error; the configured CA works
conn tls /m/small/ok/
check "unknown CA refused" \
	"$(q $DB "SET settle.ca_file = '$MOCK_DIR/other.pem'; SELECT status, error_sqlstate, error_message LIKE 'TLS verification of % failed%' FROM settle.ingest_now('tls')")" \
	"failed|08006|t"
check "system CA store alone refuses the private CA" \
	"$(q $DB "SET settle.ca_file = ''; SELECT status, error_sqlstate FROM settle.ingest_now('tls')")" "failed|08006"
check "configured CA works" "$(q $DB "SELECT status FROM settle.ingest_now('tls')")" "succeeded"

# plain http is refused unless allowed by a superuser setting
q $DB "INSERT INTO settle.connector (name, kind, endpoint, secret_name) VALUES ('plain', 'alibaba_bss', 'http://127.0.0.1:$MOCK_PORT/m/small/ok/', 'bss_test')" >/dev/null
check "http refused (42501)" \
	"$(q $DB "SET settle.allow_insecure_transport = off; SELECT status, error_sqlstate FROM settle.ingest_now('plain')")" "failed|42501"
check "only superusers may allow insecure transport" \
	"$(psql -X -A -t -q -d $DB -c "CREATE ROLE ingest_op LOGIN IN ROLE settle_operator" -c "SET ROLE ingest_op" -c "SET settle.allow_insecure_transport = on" 2>&1 | grep -c 'permission denied')" "1"

# cancel: a statement timeout aborts a trickling transfer promptly
conn trickle /m/small/trickle/ bss_test '{"billing_cycle": "2026-10", "overview": false}'
start=$(date +%s%N)
err=$(q $DB "SET statement_timeout = '1s'; SELECT settle.ingest_now('trickle')" 2>&1)
ms=$(( ($(date +%s%N) - start) / 1000000 ))
check "statement timeout cancels the transfer (57014-style error)" "$(echo "$err" | grep -c 'canceling statement due to statement timeout')" "1"
check "cancel took under 2.5 s" "$([ $ms -lt 2500 ] && echo yes || echo "no ($ms ms)")" "yes"

# the request rate bound (Alibaba: 10 requests/s per user)
conn rate /m/small/rate/
start=$(date +%s%N)
out=$(q $DB "SET settle.ingest_requests_per_second = 10; SELECT status, requests FROM settle.ingest_now('rate')")
ms=$(( ($(date +%s%N) - start) / 1000000 ))
check "10 requests/s bound: 4 requests take at least 300 ms" "$out $([ $ms -ge 300 ] && echo slow-enough || echo "too fast ($ms ms)")" "succeeded|4 slow-enough"

# health: error rate per connector
check "ingest_health error rate for a failing connector" \
	"$(q $DB "SELECT last_status, error_rate_24h, last_provider_code FROM settle.ingest_health WHERE name = 'e503always'")" "failed|1.0000|ServiceUnavailable"

# the secret never leaks
logfile=$(q postgres "SELECT setting FROM pg_settings WHERE name = 'data_directory'")
check "secret not in any settle table" \
	"$(q $DB "SELECT count(*) FROM (SELECT to_jsonb(t)::text AS x FROM settle.raw_page t UNION ALL SELECT encode(body, 'escape') FROM settle.raw_page UNION ALL SELECT to_jsonb(t)::text FROM settle.ingest_run t UNION ALL SELECT to_jsonb(t)::text FROM settle.connector t UNION ALL SELECT to_jsonb(t)::text FROM settle.exception t UNION ALL SELECT to_jsonb(t)::text FROM settle.audit_log t UNION ALL SELECT to_jsonb(t)::text FROM settle.bill_line t UNION ALL SELECT to_jsonb(t)::text FROM settle.ingest_checkpoint t) s WHERE x LIKE '%$AK_SECRET%'")" "0"
check "secret not in pg_dump" "$(pg_dump -d $DB | grep -c -- "$AK_SECRET")" "0"
check "secret not in pg_stat_activity" "$(q $DB "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%' || 'mockSecret-' || '%' AND pid <> pg_backend_pid()")" "0"
check "secret_file setting hidden from non-superusers" \
	"$(psql -X -A -t -q -d $DB -c "SET ROLE ingest_op" -c "SHOW settle.secret_file" 2>&1 | grep -c 'must be superuser\|permission denied\|privileges')" "1"
logs=$(ls /var/log/postgresql/*.log "${PG_CLUSTER_CONF_ROOT:-/nonexistent}"/../log/*.log 2>/dev/null; find /tmp -maxdepth 3 -path '*pg_virtualenv*' -name '*.log' 2>/dev/null)
leak=0
for l in $logs; do grep -q -- "$AK_SECRET" "$l" 2>/dev/null && leak=1; done
check "secret not in the server log ($(echo $logs | wc -w) log files)" "$leak" "0"
check "the log did see the run failures (log is the right one)" \
	"$(for l in $logs; do grep -l "settle_ingest_faults" "$l" 2>/dev/null; done | wc -l | tr -d ' ' | sed 's/^[1-9][0-9]*$/found/')" "found"
finish
