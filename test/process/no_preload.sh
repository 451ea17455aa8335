#!/usr/bin/env bash
# The SQL API works when settle is not in shared_preload_libraries: a second
# throwaway cluster without preloading creates the extension, records audited
# changes (the library loads on first use) and verifies the chain.
set -uo pipefail
port=$((${PGPORT:-5432} + 17))
out=$(pg_virtualenv -t -v 15 -c "-p $port" -o shared_preload_libraries= psql -X -q -At -v ON_ERROR_STOP=1 \
	-c "SET client_min_messages = warning" \
	-c "CREATE EXTENSION settle CASCADE" \
	-c "SHOW shared_preload_libraries" \
	-c "SELECT settle.add_reseller('np', 'No Preload')" \
	-c "BEGIN; SET LOCAL settle.reason = 'no preload'; SELECT settle.set_agreement('np', '2026-01-01', 'USD'); COMMIT;" \
	-c "SELECT verified::text || ' ' || entries FROM settle.verify_audit()" 2>&1)
echo "$out"
expected=$'\n1\n1\ntrue 2'
if [ "$(echo "$out" | grep -vE '^(Creating|Dropping) ' )" != "$expected" ]; then
	echo "unexpected output; wanted:"; echo "$expected"; exit 1
fi
echo "ok: settle works without preloading"
