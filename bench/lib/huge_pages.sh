# Huge pages for a benchmark's throwaway cluster (sourced by bench scripts).
#
# PostgreSQL maps shared_buffers with huge pages when the kernel has them
# reserved (huge_pages = try, the default), and the documentation recommends
# them once shared_buffers is large: every backend then maps the buffer pool
# with 2 MB pages instead of 4 kB ones.  On a virtual machine the difference
# is large: settle_period reads a reseller's lines in key order from
# everywhere in the pool, and at 5 million lines with 4 kB pages the same
# reading took twice as long (TLB misses and page walks; a bare CREATE TABLE
# AS, which streams through a small ring of buffers, gains less).
#
#   huge_pages_reserve 1GB   # reserve enough for that pool; sets hp="-o huge_pages=on"
#
# Reserves the pages (vm.nr_hugepages, as root) for the cluster and gives them
# back when the calling script exits (an EXIT trap: call it in the script's
# own shell, not in $(...)).  With SETTLE_BENCH_HUGE_PAGES=0, or when the
# kernel cannot reserve them, sets hp="-o huge_pages=off" and says so: the
# figures are then those of 4 kB pages.

huge_pages_reserve() {	# huge_pages_reserve SHARED_BUFFERS (e.g. 1GB, 512MB)
	local sb=$1 mb pages old want
	case "$sb" in
		*GB) mb=$(( ${sb%GB} * 1024 )) ;;
		*MB) mb=${sb%MB} ;;
		*) echo "huge_pages_reserve: size in MB or GB, not $sb" >&2; return 2 ;;
	esac
	if [ "${SETTLE_BENCH_HUGE_PAGES:-1}" = 0 ]; then
		echo "   huge pages: off (SETTLE_BENCH_HUGE_PAGES=0)"
		hp="-o huge_pages=off"
		return 0
	fi
	# the pool plus wal_buffers and the rest of shared memory, in 2 MB pages
	pages=$(( (mb + 256) / 2 ))
	old=$(cat /proc/sys/vm/nr_hugepages)
	# (pages other clusters hold stay theirs: reserve these on top)
	want=$(awk -v p="$pages" '/^HugePages_Total:/ { t = $2 } /^HugePages_Free:/ { f = $2 } /^HugePages_Rsvd:/ { r = $2 }
		END { print t - f + r + p }' /proc/meminfo)
	if [ "$old" -lt "$want" ]; then
		echo "$want" >/proc/sys/vm/nr_hugepages 2>/dev/null || true
		# shellcheck disable=SC2064
		trap "echo $old >/proc/sys/vm/nr_hugepages" EXIT
	fi
	if [ "$(awk '/^HugePages_Free:/ { f = $2 } /^HugePages_Rsvd:/ { r = $2 } END { print f - r }' /proc/meminfo)" -lt "$pages" ]; then
		echo "$old" >/proc/sys/vm/nr_hugepages 2>/dev/null || true
		echo "   huge pages: could not reserve $pages of 2 MB; the cluster uses 4 kB pages"
		hp="-o huge_pages=off"
		return 0
	fi
	echo "   huge pages: $pages of 2 MB reserved for the cluster (SETTLE_BENCH_HUGE_PAGES=0 to measure without)"
	hp="-o huge_pages=on"
}
