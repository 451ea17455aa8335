#!/usr/bin/env bash
# The focus_bucket connector against the mock S3 bucket (test/mock/s3_mock.py,
# HTTPS, every request's SigV4 signature checked by the mock's own
# implementation): the official FOCUS 1.0 sample split into objects under a
# prefix — a plain CSV, a gzip-compressed one, one that answers slowly and
# one the key may not read (403) — listed two keys a page.  Checked: one run
# for the listing and one per new or changed object; a slow object times out
# in its own run and is pulled on the next pull; an unchanged ETag is never
# fetched again; a changed object is re-imported whole (a changed row
# revised, a removed row withdrawn), the totals following the file exactly;
# a wrong secret is refused by the bucket and recorded.
set -uo pipefail
cd "$(dirname "$0")/../.."
. test/mock/lib.sh
mock_start
DB=settle_ingest_bucket
setup_db $DB
ROOT=$MOCK_DIR/buckets
mkdir -p "$ROOT/finops/exports/2024-09" "$ROOT/finops/other"
S3_ID=AKIAMOCKBUCKET000001
S3_SECRET="s3Secret/$(openssl rand -hex 12)"
echo "$S3_ID:$S3_SECRET" > "$MOCK_DIR/s3keys"
{ echo "s3_test=$S3_ID:$S3_SECRET"; echo "s3_wrong=$S3_ID:not-the-secret"; } >> "$SECRET_FILE"
python3 test/mock/s3_mock.py --cert "$MOCK_DIR/server.pem" --key "$MOCK_DIR/server.key" \
	--keys "$MOCK_DIR/s3keys" --root "$ROOT" --page-size 2 --slow-ms 2500 \
	--portfile "$MOCK_DIR/s3port" 2>"$MOCK_DIR/s3mock.log" &
S3_PID=$!
EXTRA_STOP="kill $S3_PID 2>/dev/null"
for _ in $(seq 1 100); do [ -f "$MOCK_DIR/s3port" ] && break; sleep 0.1; done
S3_URL=https://127.0.0.1:$(cat "$MOCK_DIR/s3port")
psql -X -q -d postgres -c "ALTER SYSTEM SET settle.secret_file = '$SECRET_FILE'" -c "SELECT pg_reload_conf()" >/dev/null
sleep 0.5

# the objects, and the expected sums, from the sample itself
python3 - test/fixtures/focus/focus_sample.csv "$ROOT/finops" "$MOCK_DIR" <<'PY' || exit 1
import csv, decimal, gzip, io, sys
src, bucket, out = sys.argv[1:4]
with open(src, newline='', encoding='utf-8-sig') as f:
    rows = list(csv.reader(f))
header, rows = rows[0], rows[1:]
col = {n: i for i, n in enumerate(header)}
def text(rs):
    b = io.StringIO()
    w = csv.writer(b, lineterminator='\n')
    w.writerow(header)
    w.writerows(rs)
    return b.getvalue().encode()
parts = {'exports/2024-09/part-0.csv': rows[:400], 'exports/2024-09/part-1.csv.gz': rows[400:800],
         'exports/2024-09/part-2-slow.csv': rows[800:]}
for k, rs in parts.items():
    data = text(rs)
    with open(bucket + '/' + k, 'wb') as f:
        f.write(gzip.compress(data) if k.endswith('.gz') else data)
with open(bucket + '/exports/2024-09/forbidden.csv', 'wb') as f:
    f.write(text(rows[:3]))
with open(bucket + '/other/not-under-the-prefix.csv', 'wb') as f:
    f.write(text(rows[:3]))
# the changed part-0: row 0's BilledCost doubled, row 1 removed
changed = [list(r) for r in rows[:400]]
changed[0][col['BilledCost']] = str(decimal.Decimal(changed[0][col['BilledCost']]) * 2)
del changed[1]
with open(out + '/part-0.changed.csv', 'wb') as f:
    f.write(text(changed))
total = sum(decimal.Decimal(r[col['BilledCost']]) for r in rows)
after = total + decimal.Decimal(rows[0][col['BilledCost']]) - decimal.Decimal(rows[1][col['BilledCost']])
with open(out + '/expected', 'w') as f:
    f.write('total=%s\nafter=%s\n' % (total, after))
PY
. "$MOCK_DIR/expected"
chmod -R a+rX "$ROOT"

q $DB "INSERT INTO settle.connector (name, kind, endpoint, secret_name, config) VALUES
  ('bucket', 'focus_bucket', '$S3_URL/finops', 's3_test', '{\"prefix\": \"exports/\", \"max_keys\": 2}'),
  ('bucket_wrong', 'focus_bucket', '$S3_URL/finops', 's3_wrong', '{\"prefix\": \"exports/\"}')" >/dev/null
stat_of() { curl -s --cacert "$MOCK_CA" "$S3_URL/__stats" | python3 -c "import json,sys; s=json.load(sys.stdin); print(s['requests'].get(sys.argv[1], 0) if sys.argv[1] != 'bad' else s['bad_signatures'])" "$1"; }

# pull 1: a 1 s transfer timeout, so the slow object fails in its own run
out=$(q $DB "SET settle.http_timeout_ms = 1000; SELECT coalesce(account_id, '(listing)') || '=' || status || ':' || coalesce(http_status::text, '') || ':' || lines_new FROM settle.ingest_now('bucket') ORDER BY ingest_run_id")
check "pull 1: the listing (2 pages of 2 keys), then one run per object; the slow one times out, the forbidden one is refused" "$(echo $out)" \
	"(listing)=succeeded::0 exports/2024-09/forbidden.csv=failed:403:0 exports/2024-09/part-0.csv=succeeded::400 exports/2024-09/part-1.csv.gz=succeeded::400 exports/2024-09/part-2-slow.csv=failed::0"
check "the listing run counted its pages" "$(q $DB "SELECT pages, requests FROM settle.ingest_run WHERE account_id IS NULL ORDER BY ingest_run_id LIMIT 1")" "2|2"
check "nothing outside the prefix was fetched" "$(stat_of /finops/other/not-under-the-prefix.csv)" "0"
check "the gzip object's raw copy is the compressed bytes, its lines the inflated rows" \
	"$(q $DB "SELECT get_byte(body, 0), get_byte(body, 1), request->>'etag' LIKE '\"%\"' FROM settle.raw_page WHERE request->>'url' LIKE '%part-1.csv.gz'")" "31|139|t"

# pull 2: the default timeout; only what is not imported yet is fetched
out=$(q $DB "SELECT coalesce(account_id, '(listing)') || '=' || status || ':' || lines_new FROM settle.ingest_now('bucket') ORDER BY ingest_run_id")
check "pull 2: the slow object now imports; imported ETags are not fetched again" "$(echo $out)" \
	"(listing)=succeeded:0 exports/2024-09/forbidden.csv=failed:0 exports/2024-09/part-2-slow.csv=succeeded:200"
check "each imported object was fetched exactly once (slow: twice, the first cut off)" \
	"$(stat_of /finops/exports/2024-09/part-0.csv) $(stat_of /finops/exports/2024-09/part-1.csv.gz) $(stat_of /finops/exports/2024-09/part-2-slow.csv)" "1 1 2"
check "all 1,000 rows stored once, summing to the file's total" \
	"$(q $DB "SELECT count(*), sum(billed_cost) FROM settle.bill_line_current WHERE withdrawal_reason IS NULL")" "1000|$total"

# pull 3: part-0 changed at the source (a new ETag)
cp "$MOCK_DIR/part-0.changed.csv" "$ROOT/finops/exports/2024-09/part-0.csv"
out=$(q $DB "SELECT coalesce(account_id, '(listing)') || '=' || status || ':' || lines_new || '/' || lines_revised || '/' || lines_unchanged || '/' || lines_withdrawn FROM settle.ingest_now('bucket') WHERE account_id IS DISTINCT FROM 'exports/2024-09/forbidden.csv' ORDER BY ingest_run_id")
check "pull 3: the changed object re-imported whole: one row revised, one withdrawn, the rest unchanged" "$(echo $out)" \
	"(listing)=succeeded:0/0/0/0 exports/2024-09/part-0.csv=succeeded:0/1/398/1"
check "999 current lines, the total following the changed file exactly" \
	"$(q $DB "SELECT count(*), sum(billed_cost) FROM settle.bill_line_current WHERE withdrawal_reason IS NULL")" "999|$after"

# pull 4: nothing changed: no object fetched but the forbidden one
before=$(stat_of /finops/exports/2024-09/part-0.csv)
check "pull 4: only the listing and the still-forbidden object" \
	"$(q $DB "SELECT count(*), count(*) FILTER (WHERE lines_new + lines_revised + lines_withdrawn > 0) FROM settle.ingest_now('bucket')")" "2|0"
check "the unchanged object was not fetched again" "$(stat_of /finops/exports/2024-09/part-0.csv)" "$before"

# signatures: the mock checked every request; a wrong secret is refused and recorded
check "every request so far carried a valid signature" "$(stat_of bad)" "0"
check "a wrong secret: the listing run fails with the bucket's SignatureDoesNotMatch" \
	"$(q $DB "SELECT status, http_status, provider_code, error_sqlstate FROM settle.ingest_now('bucket_wrong')")" \
	"failed|403|SignatureDoesNotMatch|42501"
check "the secret appears in no run row, raw page or log" \
	"$(q $DB "SELECT count(*) FROM settle.ingest_run WHERE error_message LIKE '%$S3_SECRET%'") $(grep -c -F "$S3_SECRET" "$MOCK_DIR/s3mock.log")" "0 0"
finish
