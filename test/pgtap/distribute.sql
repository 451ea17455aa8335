-- settle.distribute() on a server without Citus (docs/scale-out.md): bad
-- arguments are refused first (22023), then the missing Citus (42704), and
-- nothing is changed: bill_line keeps its foreign keys and the engine its
-- plain tables.  On Citus, test/citus/run.sh checks the rest.
BEGIN;
SELECT plan(6);
SELECT throws_ok($$SELECT * FROM settle.distribute(0)$$, '22023', NULL, 'a shard count below 1 is refused');
SELECT throws_ok($$SELECT * FROM settle.distribute(NULL)$$, '22023', NULL, 'a NULL shard count is refused');
SELECT throws_ok($$SELECT * FROM settle.distribute(4, NULL)$$, '22023', NULL, 'a NULL partial is refused');
SELECT throws_ok($$SELECT * FROM settle.distribute()$$, '42704', 'Citus is not installed in this database',
	'without Citus: 42704');
SELECT throws_ok($$SELECT * FROM settle.distribute(4, true)$$, '42704', NULL, 'partial does not get past the missing Citus');
SELECT is((SELECT count(*) FROM pg_constraint WHERE conrelid = 'settle.bill_line'::regclass AND contype = 'f'),
	2::bigint, 'bill_line keeps its two foreign keys (raw_page, connector)');
SELECT * FROM finish();
ROLLBACK;
