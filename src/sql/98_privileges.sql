-- 98: privileges, all of them, in one place.  Runs after every file that
-- creates a function, table, view or sequence (97_backup.sql included, which
-- creates two functions; the files before it create the rest), so that the
-- blanket revoke below reaches every object and nothing is granted before it
-- exists.  It creates no table and fills none, so 97_backup.sql's sweep over
-- tables and sequences does not need to run after it.
--
-- The model: nothing in schema settle is available to PUBLIC, then each role
-- is granted what it needs, role by role.  A function or relation added later
-- is available to nobody but the owner until it is granted here;
-- sql/privileges.sql shows every object's grants (so a new object, or a
-- changed grant, changes its expected output) and test/pgtap/roles.sql checks
-- that what PUBLIC may execute is the list below and that no SECURITY DEFINER
-- function is open to a login without a settle role.
--
-- Types and domains keep the default USAGE for PUBLIC: the schema itself is
-- closed to PUBLIC, so only members of the settle roles can name them, and
-- they need them to pass periods, amounts and rules.  No ALTER DEFAULT
-- PRIVILEGES: they would outlive the install script and apply to objects a
-- site creates in schema settle itself; a new object of the extension gets
-- its grants here.  Row-level security policies stay with their tables.

-- Nothing for PUBLIC.
REVOKE ALL ON SCHEMA settle FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA settle FROM PUBLIC;		-- tables and views
REVOKE ALL ON ALL SEQUENCES IN SCHEMA settle FROM PUBLIC;
REVOKE ALL ON ALL ROUTINES IN SCHEMA settle FROM PUBLIC;	-- functions, aggregates, procedures

-- Every settle role may look up names in the schema.
GRANT USAGE ON SCHEMA settle TO settle_admin, settle_operator, settle_analyst,
	settle_finance, settle_auditor, settle_reseller;

-- Reading.  Staff read every table and view of settle but two groups: the
-- audit trail (audit_log and its chains' audit_head, audit_link,
-- audit_anchor) is the admin's and the auditor's; the payees' bank details
-- (payee, payee_current) the admin's and finance's.  A reseller's login reads
-- its own rows of a few (below).
GRANT SELECT ON ALL TABLES IN SCHEMA settle TO settle_admin, settle_operator, settle_analyst, settle_finance,
	settle_auditor;
REVOKE SELECT ON settle.audit_log, settle.audit_head, settle.audit_link, settle.audit_anchor
	FROM settle_operator, settle_analyst, settle_finance;
REVOKE SELECT ON settle.payee, settle.payee_current FROM settle_operator, settle_analyst, settle_auditor;

-- What every staff role may call: reading and explaining runs, statements
-- and exceptions, verifying a run, the rule type's inspection functions,
-- formatting, the days of a DAILY connector's fan-out (settle.ingest_health
-- calls it) (the per-role grants below add what each role does).
GRANT EXECUTE ON FUNCTION
	settle.blocking_exceptions(bigint,settle.period),
	settle.check_currency(text),
	settle.closed_period(timestamp with time zone),
	settle.connector_days(text,jsonb,settle.period),
	settle.csv_field(text),
	settle.evaluate_rule(settle.rule,text,text,text,text,text,text,jsonb,numeric,numeric,numeric,integer,integer,numeric,numeric,numeric,numeric,numeric,numeric,numeric,integer),
	settle.exception_of(bigint),
	settle.explain(bigint,text),
	settle.format_amount(settle.exact_amount,text),
	settle.iban_mask(text),
	settle.iban_valid(text),
	settle.may_read_statement(bigint),
	settle.next_open_period(bigint,settle.period),
	settle.period_closes_at(settle.period),
	settle.reseller_id(text),
	settle.round_money(settle.exact_amount,integer,text),
	settle.rule_categories(settle.rule),
	settle.rule_clause(settle.rule,integer),
	settle.rule_content_hash(settle.rule),
	settle.rule_currency(settle.rule),
	settle.rule_in_force(bigint,bigint,date),
	settle.rule_minimum_payout(settle.rule),
	settle.rule_minor_unit(settle.rule),
	settle.rule_problems(settle.rule),
	settle.rule_refund_window_days(settle.rule),
	settle.rule_rounding(settle.rule),
	settle.run_diff(bigint,bigint),
	settle.run_of(bigint),
	settle.settle_progress(),
	settle.settlement_currency(bigint,settle.period),
	settle.statement_csv(bigint),
	settle.statement_html(bigint,integer),
	settle.statement_lines(bigint),
	settle.statements_html(settle.period,integer),
	settle.verify_run(bigint),
	settle.xml_escape(text)
	TO settle_admin, settle_operator, settle_analyst, settle_finance, settle_auditor;

-- PUBLIC again, each for its reason (test/pgtap/roles.sql holds the same list).
-- Evaluated by CHECK constraints and domains, by whoever writes or reads:
GRANT EXECUTE ON FUNCTION settle.check_amount(numeric, integer), settle.check_period(text) TO PUBLIC;
-- Called by the row-level security policies, as the role that queries:
GRANT EXECUTE ON FUNCTION settle.current_reseller_ids(), settle.resellers_of_login(name) TO PUBLIC;
-- Trigger functions (callable only as triggers, by whoever changes the table):
GRANT EXECUTE ON FUNCTION settle.append_only_trigger(), settle.audit_trigger(), settle.exception_guard(),
	settle.payout_guard(), settle.run_guard() TO PUBLIC;
-- The settle.rule type's input, output, send, receive, equality and hash
-- functions: needed to read, write or compare a rule at all.
GRANT EXECUTE ON FUNCTION settle.rule_in(cstring), settle.rule_out(settle.rule), settle.rule_recv(internal),
	settle.rule_send(settle.rule), settle.rule_eq(settle.rule, settle.rule), settle.rule_ne(settle.rule, settle.rule),
	settle.rule_hash(settle.rule), settle.rule_hash_extended(settle.rule, bigint) TO PUBLIC;
-- Pure arithmetic on the caller's own arguments, reading no table: the exact
-- money total and line fingerprint aggregates (their support functions take
-- internal and cannot be called from SQL), line hashes and fingerprint
-- differences, the reconciliation display and status, and the library's
-- settlement engine version.
GRANT EXECUTE ON FUNCTION settle.money_total(numeric, text), settle.money_total_trans(internal, numeric, text),
	settle.money_total_final(internal), settle.money_total_combine(internal, internal),
	settle.money_total_serial(internal), settle.money_total_deserial(bytea, internal),
	settle.money_total_check_state(bytea),
	settle.line_fingerprint(text, numeric), settle.line_fingerprint_trans(internal, text, numeric),
	settle.line_fingerprint_final(internal), settle.line_fingerprint_combine(internal, internal),
	settle.line_fingerprint_serial(internal), settle.line_fingerprint_deserial(bytea, internal),
	settle.line_fingerprint_check_state(bytea),
	settle.line_hash(text, settle.exact_amount), settle.fingerprint_diff(bytea, bytea),
	settle.recon_amount(settle.exact_amount, integer),
	settle.recon_status(settle.exact_amount, settle.exact_amount, settle.exact_amount, settle.exact_amount),
	settle.engine_version() TO PUBLIC;
-- Runs as the caller (not SECURITY DEFINER): reads recon_default and
-- agreement with the caller's table privileges and row-level security.
GRANT EXECUTE ON FUNCTION settle.recon_tolerance(bigint, date) TO PUBLIC;

-- settle_admin: everything staff may do, and the only direct writes: the
-- configuration tables (resellers, customers, accounts, products and their
-- mapping, agreements, connectors, reseller access) and inserts of FX rates
-- (append-only: never UPDATE or DELETE).  Reads the audit trail.  An admin
-- inserting into a table the install script fills evaluates the WHEN clause
-- of its restore_merge trigger, settle._restoring().
GRANT SELECT, INSERT ON
	settle.fx_rate
	TO settle_admin;
GRANT SELECT, INSERT, UPDATE, DELETE ON
	settle.agreement,
	settle.connector,
	settle.currency,
	settle.customer,
	settle.customer_account,
	settle.product,
	settle.product_category,
	settle.product_mapping,
	settle.reseller,
	settle.reseller_access
	TO settle_admin;
GRANT EXECUTE ON FUNCTION
	settle._restoring(),
	settle.acs3_authorization(text,text,jsonb,jsonb,bytea,text,text),
	settle.add_customer(text,text,text,text,jsonb),
	settle.add_fx_rate(text,text,date,settle.amount,text),
	settle.add_product(text,text,text),
	settle.add_reseller(text,text),
	settle.approve_adjustment(bigint,settle.amount,text,text),
	settle.approve_run(bigint,text),
	settle.audit_anchor_value(),
	settle.check_sanity(settle.period,bigint[]),
	settle.create_payout_batch(settle.period,text,date),
	settle.csv_parse(text),
	settle.dismiss_exception(bigint,text),
	settle.end_agreement(text,bigint,date),
	settle.explain_delta(settle.period,text),
	settle.grant_reseller_access(name,text),
	settle.import_payout_confirmations(bigint,jsonb),
	settle.import_payout_confirmations(bigint,text),
	settle.import_provider_items(text,text),
	settle.import_provider_totals(text,text),
	settle.ingest_now(bigint,settle.period),
	settle.ingest_now(text,settle.period),
	settle.ingest_reset(text),
	settle.lock_run(bigint,text),
	settle.map_account(text,text,text,date,date),
	settle.map_product(text,text,text),
	settle.open_exception(bigint,text,text,settle.period,jsonb,jsonb,text),
	settle.payout_file(bigint,text),
	settle.propose_adjustment(bigint,settle.amount,settle.period,text),
	settle.publish_rule(text,bigint,date,settle.rule,text,date),
	settle.purge(interval),
	settle.reconcile(settle.period,text),
	settle.resolve_exception(bigint,text),
	settle.set_agreement(text,date,text,date,text,text,integer,settle.amount,settle.amount,settle.amount),
	settle.set_payee(text,text,text,text,text,text),
	settle.set_payout_setting(text,text,text,text,text),
	settle.settle_closed_period(timestamp with time zone),
	settle.settle_period(settle.period,text),
	settle.sigv4_authorization(text,text,jsonb,jsonb,text,text,text,text,text),
	settle.verify_audit(),
	settle.verify_payout_batch(bigint)
	TO settle_admin;

-- settle_operator: ingestion.  Runs pulls and resets checkpoints, maps
-- accounts and products, records FX rates, imports provider totals, opens
-- and resolves exceptions.  Reads everything but the audit trail and the
-- payee's bank details (payee, payee_current).
GRANT EXECUTE ON FUNCTION
	settle.acs3_authorization(text,text,jsonb,jsonb,bytea,text,text),
	settle.add_fx_rate(text,text,date,settle.amount,text),
	settle.add_product(text,text,text),
	settle.import_provider_items(text,text),
	settle.import_provider_totals(text,text),
	settle.ingest_now(bigint,settle.period),
	settle.ingest_now(text,settle.period),
	settle.ingest_reset(text),
	settle.map_account(text,text,text,date,date),
	settle.map_product(text,text,text),
	settle.open_exception(bigint,text,text,settle.period,jsonb,jsonb,text),
	settle.resolve_exception(bigint,text),
	settle.sigv4_authorization(text,text,jsonb,jsonb,text,text,text,text,text)
	TO settle_operator;

-- settle_analyst: settles and reconciles periods, proposes adjustments,
-- opens exceptions, runs the sanity checks.  Reads everything but the audit
-- trail and the payee's bank details.
GRANT EXECUTE ON FUNCTION
	settle.check_sanity(settle.period,bigint[]),
	settle.explain_delta(settle.period,text),
	settle.open_exception(bigint,text,text,settle.period,jsonb,jsonb,text),
	settle.propose_adjustment(bigint,settle.amount,settle.period,text),
	settle.reconcile(settle.period,text),
	settle.settle_closed_period(timestamp with time zone),
	settle.settle_period(settle.period,text)
	TO settle_analyst;

-- settle_finance: agreements and rules, FX rates, approves and locks runs,
-- approves adjustments, pays (settings, payees, batches, confirmations).
-- Reads everything but the audit trail, bank details included.
GRANT EXECUTE ON FUNCTION
	settle.add_fx_rate(text,text,date,settle.amount,text),
	settle.approve_adjustment(bigint,settle.amount,text,text),
	settle.approve_run(bigint,text),
	settle.check_sanity(settle.period,bigint[]),
	settle.create_payout_batch(settle.period,text,date),
	settle.csv_parse(text),
	settle.dismiss_exception(bigint,text),
	settle.end_agreement(text,bigint,date),
	settle.explain_delta(settle.period,text),
	settle.import_payout_confirmations(bigint,jsonb),
	settle.import_payout_confirmations(bigint,text),
	settle.import_provider_items(text,text),
	settle.import_provider_totals(text,text),
	settle.lock_run(bigint,text),
	settle.map_product(text,text,text),
	settle.open_exception(bigint,text,text,settle.period,jsonb,jsonb,text),
	settle.payout_file(bigint,text),
	settle.propose_adjustment(bigint,settle.amount,settle.period,text),
	settle.publish_rule(text,bigint,date,settle.rule,text,date),
	settle.reconcile(settle.period,text),
	settle.resolve_exception(bigint,text),
	settle.set_agreement(text,date,text,date,text,text,integer,settle.amount,settle.amount,settle.amount),
	settle.set_payee(text,text,text,text,text,text),
	settle.set_payout_setting(text,text,text,text,text),
	settle.settle_closed_period(timestamp with time zone),
	settle.settle_period(settle.period,text),
	settle.verify_payout_batch(bigint)
	TO settle_finance;

-- settle_auditor: read-only, the audit trail included; verifies the audit
-- chain, runs and payout batches.
GRANT EXECUTE ON FUNCTION
	settle.audit_anchor_value(),
	settle.explain_delta(settle.period,text),
	settle.verify_audit(),
	settle.verify_payout_batch(bigint)
	TO settle_auditor;

-- settle_reseller: a reseller's login.  Reads only the rows of the resellers
-- its login is mapped to (row-level security on the tables below with a
-- reseller_id; currency and products are shared catalogues; reseller_access
-- shows a login its own mapping), and its own statements through functions
-- that check settle.may_read_statement.
GRANT SELECT ON
	settle.agreement,
	settle.bill_line,
	settle.bill_line_current,
	settle.currency,
	settle.customer,
	settle.customer_account,
	settle.product,
	settle.product_category,
	settle.reseller,
	settle.reseller_access,
	settle.run,
	settle.statement
	TO settle_reseller;
GRANT EXECUTE ON FUNCTION
	settle.closed_period(timestamp with time zone),
	settle.csv_field(text),
	settle.format_amount(settle.exact_amount,text),
	settle.iban_mask(text),
	settle.iban_valid(text),
	settle.may_read_statement(bigint),
	settle.period_closes_at(settle.period),
	settle.statement_csv(bigint),
	settle.statement_html(bigint,integer),
	settle.statement_lines(bigint),
	settle.statements_html(settle.period,integer),
	settle.xml_escape(text)
	TO settle_reseller;

-- settle_period in parallel (CALL settle.settle_period_parallel): the roles
-- that may run settle_period.  Not SECURITY DEFINER: its workers connect as
-- the caller and call settle_period with the caller's own privileges.  At
-- its start the caller lists the resellers and takes their run ids
-- (settle._parallel_queue: SECURITY DEFINER, the run id sequence), and at
-- its end runs the lineage upkeep settle_period left to it
-- (settle._lineage_upkeep: SECURITY DEFINER, it summarises and ANALYZEs
-- settle.settlement_line).  settle._parallel_settlement and
-- settle._reserved_run_id are called by settle_period, as its owner.
GRANT EXECUTE ON PROCEDURE settle.settle_period_parallel(settle.period, integer)
	TO settle_admin, settle_analyst, settle_finance;
GRANT EXECUTE ON FUNCTION settle._lineage_upkeep(bigint), settle._parallel_queue(settle.period)
	TO settle_admin, settle_analyst, settle_finance;

-- settle.distribute() (scale-out on Citus) is granted to no role: it changes
-- where tables live and drops two foreign keys, a change of the installation
-- that its owner (who also runs CREATE EXTENSION citus and adds the workers)
-- makes, like an extension update.
