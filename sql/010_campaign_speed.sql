-- 010_campaign_speed: less PostgreSQL work per campaign message.
--
-- email_messages' campaign_id, message_row and source_id are the enrollment's (copied at the
-- claim, for the metrics and the event lookups) and carry no foreign keys of their own any more:
-- deleting a campaign or a source deletes its enrollments and so their messages, and checking them
-- on every insert locked the one campaign row (and its variant's row) from every sending worker at
-- once. message_row is the variant sent (campaign_messages are replaced only while a campaign is a
-- draft, before any message). No index stays on a column the send updates (status, sent_at), so
-- that update stays on the page (HOT); fillfactor leaves the room for it, and for the enrollments'
-- updates at every step.

ALTER TABLE email_messages DROP CONSTRAINT email_messages_campaign_id_fkey,
                           DROP CONSTRAINT email_messages_message_row_fkey,
                           DROP CONSTRAINT email_messages_source_id_fkey,
                           SET (fillfactor = 80);
DROP INDEX email_messages_source_idx;
ALTER TABLE campaign_enrollments SET (fillfactor = 70);

-- What CampaignSendJob needs to take enrollment e's step due at now_, in one call: the enrollment,
-- its campaign, source and coordinator, whether the address is suppressed, the rule to apply (the
-- one scheduled, or at a timeout check the first timeout rule that holds) and the rule's variant
-- (the segment's, else the shared one). Takes no lock: the claim (campaign_take, 011) checks again. Plain SQL, so
-- that the planner inlines it into the caller's (prepared) statement.
CREATE OR REPLACE FUNCTION campaign_load(e bigint, now_ timestamptz)
RETURNS TABLE (state text, step integer, due boolean, campaign_status text, campaign_id bigint,
               campaign_name text, sender_name text, sender_email text, reply_to text, postal_address text,
               segment_id bigint, source_id bigint, email text, first_name text, last_name text,
               credential text, organization_name text, specialty text, city text, source_state text,
               coordinator_name text, coordinator_email text, coordinator_id bigint, kind text,
               suppressed text, rule_id bigint, action text, variant text, message_row bigint,
               subject text, html_template text, text_template text)
LANGUAGE sql STABLE AS $$
    SELECT en.state, en.step, coalesce(en.next_action_at <= now_, false), c.status, c.id, c.name,
           c.sender_name, c.sender_email, coalesce(c.reply_to, ''), c.postal_address, en.segment_id, s.id,
           coalesce(s.email, ''), coalesce(s.first_name, ''), coalesce(s.last_name, ''),
           coalesce(s.credential, ''), coalesce(s.organization_name, ''), coalesce(s.specialty, ''),
           coalesce(s.city, ''), coalesce(s.state, ''), coalesce(co.name, ''), coalesce(co.email, ''),
           s.coordinator_id, s.kind, (SELECT sp.reason FROM suppressions sp WHERE sp.address = lower(s.email)),
           st.id, st.action, coalesce(st.variant, ''), v.id, v.subject, v.html_template, v.text_template
      FROM campaign_enrollments en
      JOIN campaigns c ON c.id = en.campaign_id
      JOIN referral_sources s ON s.id = en.source_id
      LEFT JOIN coordinators co ON co.id = s.coordinator_id
      LEFT JOIN campaign_steps st ON st.id = coalesce(en.next_step_id,
                CASE WHEN en.state = 'active' AND en.next_action_at <= now_
                     THEN campaign_timeout_rule(en.id, now_) END)
      LEFT JOIN LATERAL (SELECT m.id, m.subject, m.html_template, m.text_template FROM campaign_messages m
                          WHERE m.campaign_id = en.campaign_id AND m.variant = st.variant
                            AND (m.segment_id = en.segment_id OR m.segment_id IS NULL)
                          ORDER BY m.segment_id NULLS LAST LIMIT 1) v ON true
     WHERE en.id = e
$$;
