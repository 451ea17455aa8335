#!/usr/bin/env bash
# Developer helper: run one pgTAP file verbosely in a fresh database.
#   bash test/dev.sh bash test/tap1.sh test/pgtap/x.sql
set -eu
createdb tap1
psql -q -X -d tap1 -c 'SET client_min_messages = warning' -c 'CREATE EXTENSION settle CASCADE' -c 'CREATE EXTENSION pgtap' >/dev/null
pg_prove -v -d tap1 "$@"
