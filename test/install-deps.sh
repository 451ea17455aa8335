#!/usr/bin/env bash
# Install, from Debian, every package the build, the tests and the demo need.
# Idempotent: does nothing when all are present.  Must run as root.
# chromium renders the printable statements in test/process/statement_html.sh.
set -euo pipefail
pkgs=(postgresql-15 postgresql-server-dev-15 postgresql-15-pgtap postgresql-15-cron
      libcurl4-openssl-dev libtap-parser-sourcehandler-pgtap-perl postgresql-common
      libxml2-utils openssl python3 make gcc clang chromium)
missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
	echo "installing: ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
