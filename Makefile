# settle — PostgreSQL extension for commission settlement (PGXS build).
#
#   make                 build settle.so and the install script
#   make install         install into the PostgreSQL found by pg_config
#   make test            install dependencies, build, and run every suite
#   make demo            run the sample month end to end
#
# C sources are every src/*.c; the install script is the concatenation of
# src/sql/*.sql in name order, so each concern owns its own file.

EXTENSION    = settle
EXTVERSION   = 0.2.0
MODULE_big   = settle
OBJS         = $(patsubst %.c,%.o,$(sort $(wildcard src/*.c)))
# settle--0.1.0--0.2.0.sql is assembled (updates/0.1.0--0.2.0-pre.sql says
# why): once 0.2.0 is released and the install script moves on, it is
# committed as built and taken off this list.
UPDATES      = settle--0.1.0--0.2.0.sql
DATA_built   = settle--$(EXTVERSION).sql $(UPDATES)
DATA         = $(filter-out $(DATA_built),$(wildcard settle--*--*.sql))
SQL_SOURCES  = $(sort $(wildcard src/sql/*.sql))

# pg_regress: every sql/*.sql, in name order.
REGRESS      = $(patsubst sql/%.sql,%,$(sort $(wildcard sql/*.sql)))
REGRESS_OPTS = --load-extension=btree_gist

# isolation specs: every test/specs/*.spec.
ISOLATION      = $(patsubst test/specs/%.spec,%,$(sort $(wildcard test/specs/*.spec)))
ISOLATION_OPTS = --inputdir=test --outputdir=test/output_iso

PG_CONFIG   ?= pg_config
PG_CPPFLAGS  = -Isrc -DSETTLE_VERSION='"$(EXTVERSION)"' -Wall -Wextra -Werror -Wno-unused-parameter -Wno-missing-field-initializers -Wno-sign-compare
SHLIB_LINK   = $(shell curl-config --libs) -lz
EXTRA_CLEAN  = test/output_iso results regression.diffs regression.out

PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

settle--$(EXTVERSION).sql: $(SQL_SOURCES)
	cat $^ > $@

settle--0.1.0--0.2.0.sql: updates/0.1.0--0.2.0-pre.sql settle--0.2.0.sql updates/0.1.0--0.2.0-post.sql
	cat $^ > $@

.PHONY: test demo
test:
	bash test/run_all.sh

demo:
	bash test/demo.sh

# every object depends on every header (few, small: keeps rebuilds honest)
$(OBJS): $(wildcard src/*.h)
