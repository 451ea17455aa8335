#!/usr/bin/env bash
# pg_virtualenv -o options for every throwaway cluster the tests and demo use.
# Issues add their settings here (one per line).
opts=(
	shared_preload_libraries=settle,pg_cron
	cron.database_name=postgres
	cron.use_background_workers=on
	max_worker_processes=16
	settle.allow_private_endpoints=on
)
for o in "${opts[@]}"; do printf -- '-o %s ' "$o"; done
