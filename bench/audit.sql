-- Audit overhead: 10,000 inserts and 10,000 updates, one statement each, on
-- an audited table vs an identical unaudited copy, in the same run.
\set ON_ERROR_STOP on
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS settle CASCADE;
DROP TABLE IF EXISTS bench_plain, bench_audited;
CREATE TABLE bench_plain (id bigint PRIMARY KEY, name text NOT NULL, rate numeric NOT NULL, note text);
CREATE TABLE bench_audited (LIKE bench_plain INCLUDING ALL);
CREATE TRIGGER audit AFTER INSERT OR UPDATE OR DELETE ON bench_audited
	FOR EACH ROW EXECUTE FUNCTION settle.audit_trigger();

CREATE FUNCTION pg_temp.run(tbl text, OUT insert_ms numeric, OUT update_ms numeric)
LANGUAGE plpgsql AS $$
DECLARE
	t0 timestamptz;
	i int;
BEGIN
	t0 := clock_timestamp();
	FOR i IN 1..10000 LOOP
		EXECUTE format('INSERT INTO %I VALUES ($1, $2, $3, $4)', tbl)
			USING i, 'reseller ' || i, i / 1000.0, 'initial';
	END LOOP;
	insert_ms := extract(epoch FROM clock_timestamp() - t0) * 1000;
	t0 := clock_timestamp();
	FOR i IN 1..10000 LOOP
		EXECUTE format('UPDATE %I SET rate = rate + 0.01, note = $2 WHERE id = $1', tbl)
			USING i, 'revised';
	END LOOP;
	update_ms := extract(epoch FROM clock_timestamp() - t0) * 1000;
END $$;

-- Warm up both paths, then measure (each in its own transaction, like a batch job).
SELECT * FROM pg_temp.run('bench_plain') \gset warm_
TRUNCATE bench_plain;
SELECT * FROM pg_temp.run('bench_audited') \gset warm_
TRUNCATE bench_audited;
SELECT * FROM pg_temp.run('bench_plain') \gset plain_
SELECT * FROM pg_temp.run('bench_audited') \gset audited_

SELECT :plain_insert_ms::numeric(10,1) AS plain_insert_ms, :audited_insert_ms::numeric(10,1) AS audited_insert_ms,
       round(:audited_insert_ms / :plain_insert_ms, 2) AS insert_ratio,
       :plain_update_ms::numeric(10,1) AS plain_update_ms, :audited_update_ms::numeric(10,1) AS audited_update_ms,
       round(:audited_update_ms / :plain_update_ms, 2) AS update_ratio,
       round((:audited_insert_ms + :audited_update_ms) / (:plain_insert_ms + :plain_update_ms), 2) AS overall_ratio;
SELECT count(*) AS audit_entries, (SELECT verified FROM settle.verify_audit()) AS chain_verifies FROM settle.audit_log;
