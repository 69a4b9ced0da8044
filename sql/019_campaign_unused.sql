-- 019_campaign_unused: drop campaign_claim and campaign_sent (007), which nothing calls.
--
-- Since 011 the worker claims a batch's messages with campaign_take and records those the relay
-- took with campaign_sent_batch; campaign_claim and campaign_sent were kept only for the workers of
-- the release before 011 that still ran while it was applied. Nothing calls them any more (no
-- worker, daemon, tool or other function), so they go rather than be kept in step with the tables.

DROP FUNCTION campaign_claim(bigint, integer, bigint, text, text, text, text, timestamptz);
DROP FUNCTION campaign_sent(bigint, timestamptz);
