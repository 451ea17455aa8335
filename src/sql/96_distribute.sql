-- 96: scale-out on Citus (docs/scale-out.md).  settle.distribute() places
-- settle's tables on a Citus cluster: the large per-reseller tables
-- distributed by reseller_id and co-located, so that one reseller's rows are
-- on one node, and the per-reseller functions delegated to that node.  Only
-- the steps that are correct today run (partial => true); the rest of the
-- plan is listed by the error a full call raises.  Nothing here runs unless
-- called: without Citus, settle is unchanged.

CREATE FUNCTION settle.distribute(shard_count integer DEFAULT 32, partial boolean DEFAULT false)
	RETURNS TABLE (object text, placement text)
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	c record;
BEGIN
	IF shard_count IS NULL OR shard_count < 1 OR partial IS NULL THEN
		RAISE EXCEPTION 'shard_count must be a positive number and partial true or false'
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	IF NOT EXISTS (SELECT FROM pg_extension WHERE extname = 'citus') THEN
		RAISE EXCEPTION 'Citus is not installed in this database'
			USING ERRCODE = 'undefined_object',
			      HINT = 'Install Citus on every node, add citus to shared_preload_libraries, CREATE EXTENSION citus and add the workers (docs/scale-out.md).';
	END IF;
	IF NOT pg_catalog.citus_is_coordinator() THEN
		RAISE EXCEPTION 'settle.distribute() runs on the coordinator'
			USING ERRCODE = 'object_not_in_prerequisite_state';
	END IF;
	IF NOT partial THEN
		RAISE EXCEPTION 'settle cannot run on Citus as a whole yet'
			USING ERRCODE = 'feature_not_supported',
			      DETAIL = 'Done: settlement (settle._settle_reseller) reads and writes the shards of its reseller on the node that holds them.  Not yet: the audit trigger on distributed and reference tables, keys and the account registry without reseller_id, row-level security on reseller_access, ingestion''s line writes, settle_period, verify_run, lineage, reconciliation and payouts on a distributed settle (docs/scale-out.md, "What remains").',
			      HINT = 'partial => true distributes what is ready (bill_line, settlement_line, the settlement engine), for a test cluster only: ingestion and settle_period then stop with an error.';
	END IF;
	IF EXISTS (SELECT FROM pg_dist_partition WHERE logicalrelid = 'settle.bill_line'::regclass) THEN
		RAISE EXCEPTION 'settle is distributed already' USING ERRCODE = 'object_not_in_prerequisite_state';
	END IF;
	-- raw_page and connector stay on the coordinator: a distributed table
	-- cannot reference a coordinator-only one.  Ingestion, the only writer of
	-- bill_line, takes both ids from rows it wrote or read in the same
	-- transaction (src/ingest_lines.c).
	FOR c IN
		SELECT conname FROM pg_constraint
		 WHERE conrelid = 'settle.bill_line'::regclass AND contype = 'f'
		   AND confrelid IN ('settle.raw_page'::regclass, 'settle.connector'::regclass)
	LOOP
		EXECUTE format('ALTER TABLE settle.bill_line DROP CONSTRAINT %I', c.conname);
	END LOOP;
	-- The only triggers of bill_line and settlement_line are the append-only
	-- guards (settle.append_only_trigger, BEFORE UPDATE, DELETE, TRUNCATE):
	-- they read and write nothing, so each shard enforces them alone.  Citus
	-- takes them only with this setting, for this transaction.
	IF EXISTS (SELECT FROM pg_trigger t JOIN pg_proc p ON p.oid = t.tgfoid
	            WHERE t.tgrelid IN ('settle.bill_line'::regclass, 'settle.settlement_line'::regclass)
	              AND NOT t.tgisinternal AND p.oid <> 'settle.append_only_trigger()'::regprocedure) THEN
		RAISE EXCEPTION 'settle.bill_line or settle.settlement_line has a trigger other than the append-only guard'
			USING ERRCODE = 'object_not_in_prerequisite_state';
	END IF;
	PERFORM set_config('citus.enable_unsafe_triggers', 'on', true);
	PERFORM create_distributed_table('settle.bill_line', 'reseller_id', shard_count := distribute.shard_count);
	object := 'settle.bill_line'; placement := 'distributed by reseller_id'; RETURN NEXT;
	PERFORM create_distributed_table('settle.settlement_line', 'reseller_id', colocate_with := 'settle.bill_line');
	object := 'settle.settlement_line'; placement := 'distributed by reseller_id, co-located with settle.bill_line'; RETURN NEXT;
	PERFORM set_config('citus.enable_unsafe_triggers', 'off', true);
	-- the engine runs where the reseller's shards are
	PERFORM create_distributed_function(
		'settle._settle_reseller(bigint, settle.period, bigint, bytea, settle.exact_amount, bigint)'::regprocedure,
		'reseller_id', colocate_with := 'settle.bill_line');
	object := 'settle._settle_reseller'; placement := 'delegated by reseller_id to the node of settle.bill_line''s shard'; RETURN NEXT;
END $$;
COMMENT ON FUNCTION settle.distribute(integer, boolean) IS
	'Places settle on a Citus cluster (run on the coordinator, after CREATE EXTENSION citus and settle and adding the workers; docs/scale-out.md).  Today only partial => true runs, for test clusters: bill_line and settlement_line distributed by reseller_id in shard_count co-located shards, and the settlement engine delegated to the node holding the reseller''s shards.  Without partial, an error (0A000) lists what is not ready; without Citus, 42704.';
