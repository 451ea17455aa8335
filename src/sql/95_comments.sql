-- 95: every column of every view of settle carries a comment, which BI tools
-- show as the field's description.  A view column that passes on a column of
-- a table or view it reads, under the same name, takes that column's
-- comment here (views over views in turn); columns a view computes are
-- commented next to the view.  Set after every view exists, so a view added
-- later is covered without a line here; test/pgtap/views_bi.sql fails on any
-- view column left without a comment and on column types BI tools cannot read.
DO $comments$
DECLARE
	r record;
	changed boolean := true;
	rounds integer := 0;
BEGIN
	WHILE changed AND rounds < 10 LOOP
		changed := false;
		rounds := rounds + 1;
		FOR r IN
			SELECT v.oid::regclass AS view_name, a.attname, min(src.description) AS description
			  FROM pg_catalog.pg_class v
			  JOIN pg_catalog.pg_attribute a ON a.attrelid = v.oid AND a.attnum > 0 AND NOT a.attisdropped
			  JOIN pg_catalog.pg_rewrite w ON w.ev_class = v.oid
			  JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_rewrite'::regclass AND d.objid = w.oid
			   AND d.refclassid = 'pg_catalog.pg_class'::regclass AND d.refobjid <> v.oid AND d.refobjsubid > 0
			  JOIN pg_catalog.pg_attribute s ON s.attrelid = d.refobjid AND s.attnum = d.refobjsubid AND s.attname = a.attname
			  JOIN pg_catalog.pg_description src ON src.objoid = d.refobjid AND src.classoid = 'pg_catalog.pg_class'::regclass
			   AND src.objsubid = d.refobjsubid
			 WHERE v.relnamespace = 'settle'::regnamespace AND v.relkind IN ('v', 'm')
			   AND pg_catalog.col_description(v.oid, a.attnum) IS NULL
			 GROUP BY v.oid, a.attname
			HAVING count(DISTINCT src.description) = 1
		LOOP
			EXECUTE pg_catalog.format('COMMENT ON COLUMN %s.%I IS %L', r.view_name, r.attname, r.description);
			changed := true;
		END LOOP;
	END LOOP;
END
$comments$;

-- Columns views compute, or that pass on an uncommented column: (view,
-- column, comment); view '*' = any view with a column of that name and no
-- comment yet (names with one meaning throughout settle).  A pair whose view
-- or column does not exist is skipped, so a view reshaped elsewhere never
-- breaks the install: the catalogue test reports what is left.
DO $comments$
DECLARE
	r record;
BEGIN
	FOR r IN
		SELECT x.view_name, x.column_name, x.comment, c.oid AS view_oid
		  FROM (VALUES
			('bill_line_current', 'customer_id', 'The end customer the line is mapped to (null: not mapped).'),
			('bill_line_current', 'raw_page_id', 'The stored page or file the revision came from (settle.raw_page).'),
			('bill_line_current', 'connector_id', 'The connector that pulled the line.'),
			('bill_line_current', 'source_record_id', 'The provider''s record id of the line (BSS InstanceID, FOCUS ResourceId).'),
			('bill_line_current', 'sub_account_id', 'FOCUS SubAccountId: the member account that used the service.'),
			('bill_line_current', 'billing_period_start', 'FOCUS BillingPeriodStart: first day of the billing cycle the line is invoiced in.'),
			('bill_line_current', 'charge_period_start', 'FOCUS ChargePeriodStart: start of the usage or service period charged.'),
			('bill_line_current', 'charge_period_end', 'FOCUS ChargePeriodEnd: end (exclusive) of the period charged.'),
			('bill_line_current', 'charge_category', 'FOCUS ChargeCategory: Usage, Purchase, Tax, Credit or Adjustment.'),
			('bill_line_current', 'charge_class', 'FOCUS ChargeClass: Correction for a correction of an earlier period, else null.'),
			('bill_line_current', 'service_name', 'FOCUS ServiceName: the provider''s name of the service.'),
			('bill_line_current', 'service_category', 'FOCUS ServiceCategory: the service''s category.'),
			('bill_line_current', 'sku_id', 'FOCUS SkuId: the provider''s billing item or SKU.'),
			('bill_line_current', 'region_id', 'FOCUS RegionId: the region of the resource.'),
			('bill_line_current', 'resource_id', 'FOCUS ResourceId: the instance or resource charged.'),
			('bill_line_current', 'billing_currency', 'FOCUS BillingCurrency: ISO 4217 code of the line''s amounts.'),
			('bill_line_current', 'discount', 'Discounts on the list cost (PretaxGrossAmount - PretaxAmount before coupons).'),
			('bill_line_current', 'coupon_deduction', 'Coupons deducted from the line (DeductedByCoupons).'),
			('bill_line_current', 'amount_paid', 'What the customer paid (PaymentAmount), when the source gives it.'),
			('bill_line_current', 'tags', 'The resource''s tags as a JSON object.'),
			('bill_line_current', 'ingested_at', 'When this revision was stored.'),
			('changes_since_last_run', 'run_at', 'When the reseller''s latest run was made.'),
			('changes_since_last_run', 'new_line_revisions', 'Bill line revisions of the reseller stored since that run.'),
			('changes_since_last_run', 'new_billed_cost', 'Their billed cost added up (mixed currencies are added as numbers).'),
			('changes_since_last_run', 'new_rule_versions', 'Rule versions of the reseller published since that run.'),
			('changes_since_last_run', 'new_fx_rates', 'FX rates recorded since that run (any pair).'),
			('changes_since_last_run', 'changed_exceptions', 'Exceptions of the reseller changed since that run.'),
			('data_quality', 'period', 'The billing period (YYYY-MM) of the lines.'),
			('data_quality', 'lines', 'Current bill lines.'),
			('data_quality', 'validated', 'Lines without validation errors.'),
			('data_quality', 'failed', 'Lines with validation errors (each opened an exception).'),
			('data_quality', 'failed_rate', 'failed / lines, to 4 decimals.'),
			('data_quality', 'missing_sku_rate', 'Share of lines without a sku id, to 4 decimals.'),
			('data_quality', 'missing_region_rate', 'Share of lines without a region id, to 4 decimals.'),
			('data_quality', 'missing_resource_rate', 'Share of lines without a resource id, to 4 decimals.'),
			('data_quality', 'unmapped', 'Lines not mapped to a reseller (reseller 0).'),
			('data_quality', 'revised', 'Lines whose current revision is not their first.'),
			('exception_queue', 'kind', 'What was detected (validation, unmapped_customer, missing_rule, reconciliation_delta, ...).'),
			('exception_queue', 'severity', 'info, warning, error or critical; error and critical block approval while open.'),
			('exception_queue', 'state', 'Where the exception is in its workflow (pending, proposed, approved, correction_applied, settled, dismissed).'),
			('exception_queue', 'detail', 'The detail the detection recorded, in words.'),
			('exception_queue', 'adjustment_currency', 'The settlement currency of the proposed adjustment''s target period.'),
			('exception_queue', 'proposed_by', 'Who proposed the adjustment or resolution.'),
			('exception_queue', 'approved_by', 'Who approved it (never the proposer).'),
			('exception_queue', 'opened_at', 'When the exception was opened.'),
			('exception_queue', 'updated_at', 'When it last changed.'),
			('exception_queue', 'blocking', 'True while it blocks approval of its reseller''s period (open, severity error or critical).'),
			('finance_summary', 'status', 'The run''s status (draft, approved, locked, paid).'),
			('finance_summary', 'gross_charges', 'Commission basis of the period''s charges.'),
			('finance_summary', 'commission', 'Commission earned on charges.'),
			('finance_summary', 'refunds', 'Commission reversed by refunds.'),
			('finance_summary', 'corrections', 'Commission of corrections of earlier periods.'),
			('finance_summary', 'adjustments', 'Approved manual adjustments.'),
			('finance_summary', 'total', 'The statement total: commission + refunds + corrections + adjustments.'),
			('finance_summary', 'carry_forward_in', 'Balance carried in from earlier periods (below the minimum payout).'),
			('finance_summary', 'carry_forward_out', 'Balance carried forward to the next period.'),
			('finance_summary', 'net_payout', 'What is paid out for the period.'),
			('finance_summary', 'open_exceptions', 'Open exceptions of the reseller and period by kind, as the text of a JSON object (cast to jsonb to query it).'),
			('finance_summary', 'reconciliation_deltas', 'Reconciliation scopes beyond tolerance (mismatched or missing) from the last settle.reconcile.'),
			('finance_summary', 'reconciliation_delta_amount', 'Their absolute deltas added up.'),
			('fx_rate_current', 'fx_rate_id', 'The id of the rate version in force.'),
			('fx_rate_current', 'base_currency', '1 base_currency = rate quote_currency.'),
			('fx_rate_current', 'quote_currency', 'The currency the rate converts to.'),
			('fx_rate_current', 'rate_date', 'The day the rate is for.'),
			('fx_rate_current', 'rate', 'Units of quote_currency per unit of base_currency.'),
			('fx_rate_current', 'source', 'Where the rate comes from (ECB, a bank, ...).'),
			('fx_rate_current', 'version', 'The version in force (the highest).'),
			('fx_rate_current', 'recorded_at', 'When that version was recorded.'),
			('fx_rate_current', 'recorded_by', 'Who recorded it.'),
			('ingest_health', 'connector_id', 'The connector.'),
			('ingest_health', 'name', 'The connector''s name.'),
			('ingest_health', 'billing_date', 'The day of the stream, for a DAILY connector fanned out over its billing cycle; NULL otherwise.'),
			('ingest_health', 'kind', 'alibaba_bss or focus_csv.'),
			('ingest_health', 'enabled', 'Whether the worker pulls it.'),
			('ingest_health', 'poll_interval_seconds', 'How often the worker pulls it, in seconds.'),
			('ingest_health', 'last_success', 'When the last successful pull of the account finished.'),
			('ingest_health', 'lag_seconds', 'Seconds since then.'),
			('ingest_health', 'last_status', 'Status of the last pull (running, succeeded, failed).'),
			('ingest_health', 'last_started_at', 'When the last pull started.'),
			('ingest_health', 'last_error_sqlstate', 'SQLSTATE of the last pull''s error.'),
			('ingest_health', 'last_error', 'Message of the last pull''s error.'),
			('ingest_health', 'last_provider_code', 'The provider''s error Code of the last pull.'),
			('ingest_health', 'runs_24h', 'Pulls started in the last 24 hours.'),
			('ingest_health', 'failed_24h', 'Of them, failed.'),
			('ingest_health', 'error_rate_24h', 'failed_24h / runs_24h, to 4 decimals (null without pulls).'),
			('payee_current', 'version', 'The payee version in force (the highest).'),
			('payee_current', 'country', 'ISO 3166 country of the payee''s account.'),
			('payee_current', 'recorded_at', 'When that version was recorded.'),
			('payee_current', 'recorded_by', 'Who recorded it.'),
			('payout_reconciliation', 'net_payout', 'The statement''s net payout.'),
			('payout_reconciliation', 'in_batches', 'Payout batches holding the run.'),
			('payout_reconciliation', 'payouts', 'What those payouts add up to.'),
			('payout_reconciliation', 'status', 'matched, missing, mismatched or not_due.'),
			('period_status', 'run_status', 'The current run''s status (draft, approved, locked, paid).'),
			('period_status', 'state', 'ready, in_review, blocked, approved, locked or paid.'),
			('period_status', 'total', 'The statement total.'),
			('period_status', 'carry_forward_out', 'Balance carried forward to the next period.'),
			('period_status', 'net_payout', 'What is paid out for the period.'),
			('period_status', 'open_exceptions', 'Open exceptions of the reseller and period.'),
			('period_status', 'blocking_exceptions', 'Of them, those that block approval.'),
			('period_status', 'created_at', 'When the current run was made.'),
			('period_status', 'approved_by', 'Who approved the run.'),
			('period_status', 'approved_at', 'When.'),
			('period_status', 'locked_by', 'Who locked the run.'),
			('period_status', 'locked_at', 'When.'),
			('period_status', 'paid_at', 'When it was marked paid.'),
			('provider_side', 'source', 'connector:<name> (a QueryBillOverview snapshot) or import:<name> (a file).'),
			('provider_side', 'billing_cycle', 'The billing cycle (YYYY-MM).'),
			('provider_side', 'product_code', 'The product code, lower case.'),
			('provider_side', 'currency', 'The currency of the total.'),
			('provider_side', 'amount', 'The provider''s payable total of the scope.'),
			('provider_side', 'provider_rows', 'Rows of the snapshot added up (subscription types), 1 for a file.'),
			('provider_side', 'taken_at', 'When the total was taken: page received, or file imported.'),
			('provider_total_current', 'item_no', 'The item''s position in its page.'),
			('provider_total_current', 'product_type', 'The provider''s ProductType.'),
			('provider_total_current', 'subscription_type', 'PayAsYouGo or Subscription.'),
			('provider_total_current', 'item', 'The provider''s Item (SubscriptionOrder, PayAsYouGoBill, Refund, Adjustment).'),
			('provider_total_current', 'pretax_gross_amount', 'PretaxGrossAmount: before discounts and coupons.'),
			('provider_total_current', 'invoice_discount', 'InvoiceDiscount.'),
			('provider_total_current', 'deducted_by_coupons', 'DeductedByCoupons.'),
			('provider_total_current', 'pretax_amount', 'PretaxAmount: the payable total settle reconciles against.'),
			('provider_total_current', 'payment_amount', 'PaymentAmount.'),
			('provider_total_current', 'outstanding_amount', 'OutstandingAmount.'),
			('sanity_checks', 'check_name', 'negative_commission, swing, blocked_run or reconciliation.'),
			('sanity_checks', 'ok', 'False is an alarm.'),
			('sanity_checks', 'detail', 'The numbers checked, in words.'),
			('settlement_progress', 'pid', 'The backend settling.'),
			('settlement_progress', 'phase', 'reading bill lines, evaluating rules or writing lineage.'),
			('settlement_progress', 'lines_done', 'Lines done in the phase.'),
			('settlement_progress', 'started', 'When the settlement started.'),
			('settlement_progress', 'elapsed_seconds', 'Seconds since then (to the millisecond).'),
			('*', 'reseller_id', 'The reseller (0: lines or scopes not mapped to one).'),
			('*', 'reseller', 'The reseller''s code.'),
			('*', 'period', 'The settlement period (YYYY-MM).'),
			('*', 'run_id', 'The settlement run.'),
			('*', 'currency', 'ISO 4217 currency of the row''s amounts.'),
			('*', 'billing_account_id', 'The provider''s billing account.'),
			('*', 'product_code', 'The provider''s product code.'),
			('*', 'billing_cycle', 'The billing cycle (YYYY-MM).'),
			('*', 'connector_id', 'The connector.'),
			('*', 'raw_page_id', 'The stored page the row came from (settle.raw_page).'),
			('*', 'exception_id', 'The exception.'),
			('*', 'open_exceptions', 'Open exceptions.')
		  ) x(view_name, column_name, comment)
		  JOIN pg_catalog.pg_class c ON c.relnamespace = 'settle'::regnamespace AND c.relkind IN ('v', 'm')
		   AND (x.view_name = '*' OR c.relname = x.view_name)
		  JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attname = x.column_name AND a.attnum > 0
		   AND NOT a.attisdropped
		 WHERE pg_catalog.col_description(c.oid, a.attnum) IS NULL
		 ORDER BY (x.view_name = '*'), c.relname
	LOOP
		IF pg_catalog.col_description(r.view_oid, (SELECT a.attnum FROM pg_catalog.pg_attribute a
		                                            WHERE a.attrelid = r.view_oid AND a.attname = r.column_name)) IS NULL THEN
			EXECUTE pg_catalog.format('COMMENT ON COLUMN %s.%I IS %L', r.view_oid::regclass, r.column_name, r.comment);
		END IF;
	END LOOP;
END
$comments$;
