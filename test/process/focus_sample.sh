#!/usr/bin/env bash
# The public FinOps FOCUS 1.0 sample settles as published: its 1,000 rows
# (test/fixtures/focus/, AWS, Microsoft and Oracle; bare NULL tokens, amounts
# of up to 11 decimals, product names rather than codes, account ids of three
# clouds) are imported with the focus_csv connector and no preparation of the
# file, for one reseller whose rule is "otherwise pay 5%";
# settle.settle_period settles September 2024 (every row is charged in it;
# one is billed in October) and the numbers are checked against the file
# itself, summed here with Python's decimal module: the billed total to the
# last digit, the commission exactly 5% of every eligible line (Usage and
# Purchase: the Credit and Adjustment rows earn nothing), the statement
# rounded once to the cent, verify_run true.
#
# What finance sets up, as a user would: each ServiceName mapped to a
# product (settle.map_product; a code made of the name in lower case, other
# characters as "-", in the category of its most frequent ServiceCategory),
# each SubAccountId a customer of the reseller (settle.map_account).  One
# name is left unmapped first, to see one exception for the name, not one
# per line.
#
# Then the fix-and-re-pull sequence of a file read without null tokens (a
# second database, connector null_tokens []): every row fails on
# ChargeClass "NULL"; the file is fixed (bare NULLs emptied) and pulled
# again: the re-import withdraws the 1,000 stale lines, and exactly 1,000
# current lines remain, summing to the file's total.
#
# Runs its own cluster (TimeZone UTC: the sample's timestamps carry no zone),
# or the server test/valgrind.sh gives it (PGHOST/PGPORT set and
# FOCUS_SERVER_LOG naming its log).
set -uo pipefail
cd "$(dirname "$0")/../.."
. test/mock/lib.sh
FIXTURE=test/fixtures/focus/focus_sample.csv
W=$(mktemp -d /tmp/settle-focus.XXXXXX)
chmod 755 "$W"
BIN=$(pg_config --bindir)
STOP=
trap 'eval "$STOP"; rm -rf "$W"' EXIT
if [ -n "${FOCUS_SERVER_LOG:-}" ]; then
	LOG=$FOCUS_SERVER_LOG
else
	chown postgres "$W"
	PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
	su postgres -c "$BIN/initdb -D $W/data -A trust -U postgres --no-sync" >/dev/null || exit 1
	cat >> "$W/data/postgresql.conf" <<CONF
port = $PORT
listen_addresses = ''
unix_socket_directories = '$W'
shared_preload_libraries = 'settle'
timezone = 'UTC'
fsync = off
logging_collector = off
CONF
	LOG=$W/server.log
	su postgres -c "$BIN/pg_ctl -D $W/data -l $LOG -w start" >/dev/null || { cat "$LOG"; exit 1; }
	STOP="su postgres -c '$BIN/pg_ctl -D $W/data -m immediate stop' >/dev/null 2>&1"
	export PGHOST=$W PGPORT=$PORT PGUSER=postgres
fi
log_lines_before=$(wc -l < "$LOG")
DB=settle_focus

# ---- the expected numbers, from the file alone
python3 - "$FIXTURE" "$W" <<'PY' || exit 1
import collections, csv, decimal, re, sys
src, out = sys.argv[1], sys.argv[2]
decimal.getcontext().prec = 60
with open(src, newline='', encoding='utf-8-sig') as f:
    rows = list(csv.reader(f))
header, rows = rows[0], rows[1:]
col = {n: i for i, n in enumerate(header)}
cats = {'Compute': 'compute', 'Storage': 'storage', 'Networking': 'networking',
        'Databases': 'database', 'Security': 'security'}
def code(service):
    return re.sub(r'[^a-z0-9]+', '-', service.lower()).strip('-')
product_cats = collections.defaultdict(collections.Counter)
accounts = {}
for r in rows:
    product_cats[(code(r[col['ServiceName']]), r[col['ServiceName']])][cats.get(r[col['ServiceCategory']], 'other')] += 1
    accounts[r[col['SubAccountId']]] = r[col['SubAccountName']]
with open(out + '/products.tsv', 'w') as f:
    for (p, name), c in sorted(product_cats.items()):
        f.write('%s\t%s\t%s\n' % (p, c.most_common(1)[0][0], name))
with open(out + '/accounts.tsv', 'w') as f:
    for a, name in sorted(accounts.items()):
        f.write('%s\t%s\n' % (a, name))
# the fixed copy: bare NULL fields emptied
with open(out + '/fixed.csv', 'w', newline='') as f:
    w = csv.writer(f, lineterminator='\n')
    w.writerow(header)
    w.writerows([['' if v == 'NULL' else v for v in r] for r in rows])
cents = lambda x: x.quantize(decimal.Decimal('0.01'), rounding=decimal.ROUND_HALF_EVEN)
with open(out + '/expected', 'w') as f:
    f.write('lines=%d\n' % len(rows))
    f.write('billed=%s\n' % sum(decimal.Decimal(r[col['BilledCost']]) for r in rows))
    f.write('places=%d\n' % max(len(r[col['BilledCost']].split('.')[1]) for r in rows))
    f.write('products=%d\naccounts=%d\n' % (len(product_cats), len(accounts)))
    f.write('unmapped_name="%s"\nunmapped_lines=%d\n' % (
        'AWS CloudTrail', sum(1 for r in rows if r[col['ServiceName']] == 'AWS CloudTrail')))
    # settle_period takes a line in the month of its charge (UTC): all 1,000
    # rows charge in September 2024 (one is billed in October)
    kept = rows[:900]
    kept_periods = {r[col['BillingPeriodStart']][:7] for r in kept}
    f.write('truncated_withdrawn=%d\ntruncated_current=%d\n' % (
        sum(1 for r in rows[900:] if r[col['BillingPeriodStart']][:7] in kept_periods),
        900 + sum(1 for r in rows[900:] if r[col['BillingPeriodStart']][:7] not in kept_periods)))
    for period in ('2024-09',):
        rs = [r for r in rows if r[col['ChargePeriodStart']].startswith(period)]
        billed = sum(decimal.Decimal(r[col['BilledCost']]) for r in rs)
        eligible = sum(decimal.Decimal(r[col['BilledCost']]) for r in rs
                       if r[col['ChargeCategory']] in ('Usage', 'Purchase'))
        exact = sum(decimal.Decimal(r[col['BilledCost']]) * decimal.Decimal('0.05')
                    for r in rs if r[col['ChargeCategory']] in ('Usage', 'Purchase'))
        assert exact == eligible * decimal.Decimal('0.05')
        p = period.replace('-', '_')
        f.write('lines_%s=%d\nbilled_%s=%s\nexact_%s=%s\ncommission_%s=%s\ngross_%s=%s\ncommissionable_%s=%s\n' % (
            p, len(rs), p, billed, p, exact.normalize(), p, cents(exact), p, cents(billed), p, cents(eligible)))
PY
chmod 644 "$W"/*.csv "$W"/*.tsv
cp "$FIXTURE" "$W/focus.csv"; chmod 644 "$W/focus.csv"
. "$W/expected"
echo "# the file: $lines lines, billed $billed (up to $places decimals), $products products, $accounts accounts"
check "the sample's 1,000 rows" "$lines" "1000"

setup() {	# setup DB: settle, the reseller, its rule, products and accounts
	dropdb --if-exists "$1" >/dev/null 2>&1
	createdb "$1" || exit 1
	psql -X -q -v ON_ERROR_STOP=1 -d "$1" >/dev/null <<SQL || exit 1
SET client_min_messages = warning;
CREATE EXTENSION settle CASCADE;
SET settle.reason = 'FOCUS sample test';
CREATE TEMP TABLE products (code text, category text, name text);
\copy products FROM '$W/products.tsv'
CREATE TEMP TABLE accounts (account text, name text);
\copy accounts FROM '$W/accounts.tsv'
SELECT settle.add_reseller('focus', 'FOCUS sample reseller');
SELECT settle.set_agreement('focus', '2024-01-01', 'USD');
SELECT settle.publish_rule('focus', (SELECT agreement_id FROM settle.agreement WHERE reseller_id = settle.reseller_id('focus')),
	'2024-01-01', E'currency USD\notherwise pay 5%', 'flat 5%');
SELECT count(settle.add_product(code, category, name)) FROM products;
SELECT count(settle.map_product('ServiceName', name, code)) FROM products WHERE name <> '$unmapped_name';
CREATE TEMP TABLE numbered AS SELECT account, name, 'c' || row_number() OVER (ORDER BY account) AS code FROM accounts;
SELECT count(settle.add_customer('focus', code, name)) FROM numbered;
SELECT count(settle.map_account(account, 'focus', code)) FROM numbered;
SQL
}
setup "$DB"
q $DB "INSERT INTO settle.connector (name, kind, endpoint) VALUES ('focus_sample', 'focus_csv', '$W/focus.csv')" >/dev/null

check "import as published, one name unmapped: only its lines fail" \
	"$(q $DB "SET settle.allow_insecure_transport = on; SELECT status, lines_seen, lines_new, lines_invalid FROM settle.ingest_now('focus_sample')")" \
	"succeeded|$lines|$lines|$unmapped_lines"
check "one unmapped_product exception for the name, not one per line" \
	"$(q $DB "SELECT count(*), min(scope_key), min(refs->>'source_value') FROM settle.exception WHERE kind = 'unmapped_product'")" \
	"1|product:ServiceName:$unmapped_name|$unmapped_name"
check "no other exception: every account id (AWS, Azure, OCI) mapped, every other line valid" \
	"$(q $DB "SELECT count(*) FROM settle.exception WHERE kind <> 'unmapped_product'")" "0"
# finance maps the name; the next pull revises exactly its lines
q $DB "SET settle.reason = 'map the last name'; SELECT settle.map_product('ServiceName', '$unmapped_name', (SELECT product_code FROM settle.product WHERE name = '$unmapped_name'))" >/dev/null
check "after mapping the name, a pull revises only its lines, now valid" \
	"$(q $DB "SET settle.allow_insecure_transport = on; SELECT status, lines_new, lines_revised, lines_unchanged, lines_invalid FROM settle.ingest_now('focus_sample')")" \
	"succeeded|0|$unmapped_lines|$((lines - unmapped_lines))|0"
check "the exception resolves" \
	"$(q $DB "SELECT (settle.resolve_exception(exception_id, 'name mapped')).state FROM settle.exception WHERE kind = 'unmapped_product'")" "correction_applied"
check "current lines: count, periods, all mapped to the reseller, none invalid, products from the mapping" \
	"$(q $DB "SELECT count(*), min(billing_period_start), max(billing_period_start), count(*) FILTER (WHERE reseller_id = settle.reseller_id('focus')), count(*) FILTER (WHERE validation_errors <> '{}'), count(*) FILTER (WHERE product_code IN (SELECT product_code FROM settle.product_mapping)) FROM settle.bill_line_current")" \
	"$lines|2024-09-01|2024-10-01|$lines|0|$lines"
check "current lines: billed total equals the file's, to the last digit" \
	"$(q $DB "SELECT sum(billed_cost) FROM settle.bill_line_current")" "$billed"
check "timestamps without a zone are UTC (the Oracle row of 2024-09-30 22:00 billed in October)" \
	"$(q $DB "SET TimeZone = 'Asia/Shanghai'; SELECT count(*) FROM settle.bill_line_current WHERE charge_period_start = '2024-09-30 22:00:00+00' AND billing_period_start = '2024-10-01'")" "1"

for period in 2024-09; do
	p=${period/-/_}
	eval "n=\$lines_$p exact=\$exact_$p commission=\$commission_$p gross=\$gross_$p commissionable=\$commissionable_$p"
	run=$(q $DB "SELECT run_id FROM settle.settle_period('$period')")
	check "$period: settle_period returns one run" "$(echo "$run" | wc -w)" "1"
	run=${run:-0}
	check "$period: the run takes every line of the period, not blocked" \
		"$(q $DB "SELECT lines_in, lines_out, blocked FROM settle.run WHERE run_id = $run")" "$n|$n|f"
	check "$period: every line earns exactly 5% of its billed amount if Usage/Purchase, else nothing" \
		"$(q $DB "SELECT count(*) FROM settle.settlement_line l JOIN settle.bill_line b USING (reseller_id, line_key, revision)
		          WHERE l.run_id = $run AND l.kind = 'c'
		            AND l.unrounded = CASE WHEN b.charge_category IN ('Usage', 'Purchase') THEN b.billed_cost * 0.05 ELSE 0 END")" "$n"
	check "$period: exact commission is 5% of the file's eligible total" \
		"$(q $DB "SELECT trim_scale(sum(unrounded)) FROM settle.settlement_line WHERE run_id = $run")" "$exact"
	check "$period: statement gross, commissionable, commission (each rounded once to the cent)" \
		"$(q $DB "SELECT lines, gross_charges, commissionable, commission FROM settle.statement WHERE run_id = $run")" \
		"$n|$gross|$commissionable|$commission"
	check "$period: verify_run re-derives the run" "$(q $DB "SELECT verified, lines FROM settle.verify_run($run)")" "t|$n"
done

# ---- fix and re-pull: a connector that reads NULL literally
DB2=settle_focus_repull
setup "$DB2"
q $DB2 "SET settle.reason = 'map all'; SELECT settle.map_product('ServiceName', '$unmapped_name', (SELECT product_code FROM settle.product WHERE name = '$unmapped_name'))" >/dev/null
q $DB2 "INSERT INTO settle.connector (name, kind, endpoint, config) VALUES ('repull', 'focus_csv', '$W/focus.csv', '{\"null_tokens\": []}')" >/dev/null
check "re-pull 1, NULL read literally: every row fails (ChargeClass NULL)" \
	"$(q $DB2 "SET settle.allow_insecure_transport = on; SELECT status, lines_new, lines_invalid FROM settle.ingest_now('repull')")" \
	"succeeded|$lines|$lines"
check "the failure named: unknown_charge_class:NULL on every line" \
	"$(q $DB2 "SELECT count(*) FROM settle.bill_line_current WHERE 'unknown_charge_class:NULL' = ANY (validation_errors)")" "$lines"
cp "$W/fixed.csv" "$W/focus.csv"
check "re-pull 2, the file fixed: 1,000 new lines, the 1,000 stale ones withdrawn" \
	"$(q $DB2 "SET settle.allow_insecure_transport = on; SELECT status, lines_new, lines_invalid, lines_withdrawn FROM settle.ingest_now('repull')")" \
	"succeeded|$lines|0|$lines"
check "exactly 1,000 current lines, none invalid, summing to the file's total" \
	"$(q $DB2 "SELECT count(*), count(*) FILTER (WHERE validation_errors <> '{}'), sum(billed_cost) FROM settle.bill_line_current WHERE withdrawal_reason IS NULL")" \
	"$lines|0|$billed"
check "the withdrawn lines: zero amounts and the reason" \
	"$(q $DB2 "SELECT count(*), sum(billed_cost), min(withdrawal_reason) LIKE 'not in a complete re-import of %' FROM settle.bill_line_current WHERE withdrawal_reason IS NOT NULL")" \
	"$lines|0|t"
check "re-pull 3, unchanged: nothing new, nothing withdrawn" \
	"$(q $DB2 "SET settle.allow_insecure_transport = on; SELECT status, lines_new, lines_unchanged, lines_withdrawn FROM settle.ingest_now('repull')")" \
	"succeeded|0|$lines|0"
head -1 "$W/fixed.csv" > "$W/focus.csv"; tail -n +2 "$W/fixed.csv" | head -n 900 >> "$W/focus.csv"
# a billing period the shortened file no longer holds at all is not re-imported:
# its line stays (the October row, if it is among the last 100)
check "re-pull 4, 900 rows kept: the rest of their billing period withdrawn, not double counted" \
	"$(q $DB2 "SET settle.allow_insecure_transport = on; SELECT status, lines_withdrawn FROM settle.ingest_now('repull')")|$(q $DB2 "SELECT count(*) FROM settle.bill_line_current WHERE withdrawal_reason IS NULL")" \
	"succeeded|$truncated_withdrawn|$truncated_current"
dropdb "$DB2"

check "the server log shows no crashed backend" \
	"$(tail -n +"$((log_lines_before + 1))" "$LOG" | grep -cE 'terminated by signal|was terminated|exited with exit code [^01]|server process .* exited|all server processes terminated')" "0"
finish
