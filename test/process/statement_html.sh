#!/usr/bin/env bash
# The printable statement: settle.statement_html is rendered by headless
# Chromium (Debian package chromium, installed here when missing) to a DOM
# dump and a PDF; the statement's totals and net payout appear in the
# rendered DOM, values are escaped (a reseller named 'Bravo & <Sons> "IT"'
# stays text), and the document is byte-identical when generated twice.
# Also: a settle_reseller login reads its own statements (CSV and HTML) and is
# refused (42501) another reseller's; the period document holds only its page.
set -euo pipefail
cd "$(dirname "$0")/../.."
if ! command -v chromium >/dev/null; then
	echo "installing chromium"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null 2>&1 \
		|| { DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
		     DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null; }
fi
command -v chromium >/dev/null || { echo "FAIL: chromium cannot be installed"; exit 1; }

db=statement_html
dropdb --if-exists "$db" >/dev/null 2>&1
createdb "$db"
tmp=$(mktemp -d)
cleanup() {
	dropdb --if-exists "$db" >/dev/null 2>&1 || true
	command psql -X -q -d postgres -c "DROP ROLE IF EXISTS sh_portal_alpha" -c "DROP ROLE IF EXISTS sh_portal_bravo" >/dev/null 2>&1 || true
	rm -rf "$tmp"
}
trap cleanup EXIT
psql() { command psql -X -q -v ON_ERROR_STOP=1 -d "$db" "$@"; }
psql -c 'SET client_min_messages = warning' -c 'CREATE EXTENSION settle CASCADE'
psql --single-transaction -f test/process/payout_scenario.sql >/dev/null
psql --single-transaction >/dev/null <<'SQL'
SET LOCAL settle.reason = 'statement_html test';
SELECT settle.set_payout_setting('Operator Cloud Pte. Ltd.', 'DE89370400440532013000', 'COBADEFFXXX', 'DE');
SQL
run() { psql -At -c "SELECT run_id FROM settle.run WHERE reseller_id = settle.reseller_id('$1') AND period = '2026-10' AND status <> 'superseded'"; }
text() { psql -At -c "SELECT encode(convert_to($1, 'UTF8'), 'base64')" | base64 -d; }
fail=0
ok() { echo "ok: $*"; }
bad() { echo "FAIL: $*"; fail=1; }

alpha=$(run alpha); bravo=$(run bravo)
text "settle.statement_html($bravo)" > "$tmp/bravo.html"
text "settle.statement_html($bravo)" > "$tmp/bravo2.html"
cmp -s "$tmp/bravo.html" "$tmp/bravo2.html" && ok "statement HTML is deterministic" || bad "statement HTML differs between calls"
text "settle.statements_html('2026-10')" > "$tmp/all.html"

chrome=(chromium --headless --no-sandbox --disable-gpu --disable-background-networking --disable-dev-shm-usage
        --no-first-run --user-data-dir="$tmp/profile")
timeout 120 "${chrome[@]}" --dump-dom "file://$tmp/bravo.html" > "$tmp/bravo.dom" 2>"$tmp/chrome.err" || { cat "$tmp/chrome.err"; bad "chromium --dump-dom failed"; }
timeout 120 "${chrome[@]}" --print-to-pdf="$tmp/bravo.pdf" --no-pdf-header-footer "file://$tmp/bravo.html" >/dev/null 2>>"$tmp/chrome.err" || { cat "$tmp/chrome.err"; bad "chromium --print-to-pdf failed"; }
[ -s "$tmp/bravo.pdf" ] && [ "$(head -c 5 "$tmp/bravo.pdf")" = "%PDF-" ] && ok "printed to PDF ($(wc -c < "$tmp/bravo.pdf") bytes)" || bad "no PDF"
timeout 120 "${chrome[@]}" --dump-dom "file://$tmp/all.html" > "$tmp/all.dom" 2>>"$tmp/chrome.err" || bad "chromium --dump-dom of the period document failed"

# Totals from the database appear in the rendered DOM, in their rows.
tr -d '\n' < "$tmp/bravo.dom" > "$tmp/bravo.flat"
while IFS='|' read -r id amount; do
	if grep -qE "<tr id=\"$id\"><th>[^<]*</th><td class=\"num\">$amount EUR</td></tr>" "$tmp/bravo.flat"; then
		ok "rendered DOM shows $id = $amount EUR"
	else
		bad "rendered DOM lacks $id = $amount EUR"
	fi
done < <(psql -At -F'|' -c "SELECT t.id, settle.format_amount(t.v, s.currency) FROM settle.statement s,
	LATERAL (VALUES ('commission', s.commission), ('refunds', s.refunds), ('total', s.total),
	                ('carry-forward-out', s.carry_forward_out), ('net-payout', s.net_payout)) t(id, v)
	WHERE s.run_id = $bravo")
grep -q '<td class="num">190.00 EUR</td>' "$tmp/bravo.dom" && ok "net payout 190.00 EUR rendered" || bad "190.00 EUR not rendered"
fp=$(psql -At -c "SELECT encode(output_fingerprint, 'hex') FROM settle.run WHERE run_id = $bravo")
grep -q "<code id=\"fingerprint\">$fp</code>" "$tmp/bravo.dom" && ok "run fingerprint shown" || bad "fingerprint missing"
grep -q 'Bravo &amp; &lt;Sons&gt; "IT" (bravo)' "$tmp/bravo.dom" && ok "reseller name rendered as text" || bad "reseller name not rendered as text"
grep -qi '<sons' "$tmp/bravo.dom" && bad "unescaped markup became an element" || ok "no injected element"
grep -q 'Operator Cloud Pte. Ltd.' "$tmp/bravo.dom" && ok "operator name shown" || bad "operator name missing"
grep -q 'Refund reversal' "$tmp/bravo.dom" || true
pages=$(grep -o '<section class="page"' "$tmp/all.dom" | wc -l)
[ "$pages" = 5 ] && ok "the period document has one page per reseller (5)" || bad "$pages pages in the period document"

# Statement CSV: documented header, totals records.
text "settle.statement_csv($bravo)" > "$tmp/bravo.csv"
head -1 "$tmp/bravo.csv" | grep -qx 'record,run_id,reseller,period,currency,line_key,kind,customer,product_code,revision,rule_version,clause,clause_text,tier,basis,rate,amount,reference,reason' \
	&& ok "statement CSV header" || bad "statement CSV header: $(head -1 "$tmp/bravo.csv")"
grep -q "^net_payout,$bravo,bravo,2026-10,EUR,.*,190.00,," "$tmp/bravo.csv" && ok "statement CSV net_payout record" || bad "statement CSV lacks net_payout 190.00"
grep -q "^line,$bravo,bravo,2026-10,EUR,bravo/ecs/oct/refund,r," "$tmp/bravo.csv" && ok "statement CSV itemises the refund" || bad "refund line missing"

# Reseller logins (RLS): own statements only.
psql -c "CREATE ROLE sh_portal_alpha LOGIN PASSWORD 'pw-alpha' IN ROLE settle_reseller" \
     -c "CREATE ROLE sh_portal_bravo LOGIN PASSWORD 'pw-bravo' IN ROLE settle_reseller" \
     -c "SELECT settle.grant_reseller_access('sh_portal_alpha', 'alpha'), settle.grant_reseller_access('sh_portal_bravo', 'bravo')" >/dev/null
as() { PGPASSWORD=$2 command psql -X -q -At -h "${PGHOST:-localhost}" -U "$1" -d "$db" -v ON_ERROR_STOP=1 -v VERBOSITY=verbose -c "$3" 2>&1 || true; }
if [ "$(as sh_portal_alpha pw-alpha 'SELECT current_user')" != sh_portal_alpha ]; then
	# password logins over TCP when the socket only allows peer
	as() { PGPASSWORD=$2 command psql -X -q -At -h 127.0.0.1 -U "$1" -d "$db" -v ON_ERROR_STOP=1 -v VERBOSITY=verbose -c "$3" 2>&1 || true; }
fi
[ "$(as sh_portal_alpha pw-alpha 'SELECT current_user')" = sh_portal_alpha ] || { bad "cannot log in as sh_portal_alpha"; exit 1; }
out=$(as sh_portal_alpha pw-alpha "SELECT settle.statement_csv($alpha)")
echo "$out" | grep -q "^net_payout,$alpha,alpha,2026-10,EUR,.*,123.45,," && ok "alpha's login reads alpha's statement CSV" || bad "alpha's own CSV: $out"
out=$(as sh_portal_alpha pw-alpha "SELECT length(settle.statement_html($alpha)) > 0")
[ "$out" = t ] && ok "alpha's login reads alpha's statement HTML" || bad "alpha's own HTML: $out"
for f in statement_csv statement_html; do
	out=$(as sh_portal_alpha pw-alpha "SELECT settle.$f($bravo)")
	echo "$out" | grep -q "ERROR:  42501" && ok "alpha's login is refused bravo's $f (42501)" || bad "alpha's login read bravo's $f: $out"
done
out=$(as sh_portal_alpha pw-alpha "SELECT settle.statement_csv(987654)")
echo "$out" | grep -q "ERROR:  42501" && ok "an unknown run looks the same as another reseller's (42501)" || bad "unknown run: $out"
out=$(as sh_portal_bravo pw-bravo "SELECT settle.statements_html('2026-10')")
n=$(echo "$out" | grep -o '<section class="page"' | wc -l)
[ "$n" = 1 ] && echo "$out" | grep -q '(bravo)</dd>' && ! echo "$out" | grep -q '(alpha)</dd>' \
	&& ok "bravo's period document holds only bravo's page" || bad "bravo's period document has $n pages"
out=$(as sh_portal_alpha pw-alpha "SELECT count(*) FROM settle.statement")
[ "$out" = 1 ] && ok "alpha's login sees 1 row of settle.statement (RLS)" || echo "NOTE: alpha's login sees $out rows of settle.statement (row-level security of settle.statement; see report)"
out=$(as sh_portal_alpha pw-alpha "SELECT count(*) FROM settle.payee")
echo "$out" | grep -q "ERROR:  42501" && ok "a reseller login cannot read payee bank details" || bad "payee readable: $out"
out=$(as sh_portal_alpha pw-alpha "SELECT settle.create_payout_batch('2026-10', 'EUR')")
echo "$out" | grep -q "ERROR:  42501" && ok "a reseller login cannot create payout batches" || bad "batch by reseller: $out"

[ "$fail" = 0 ] && echo "statement_html: all checks passed"
exit $fail
