-- 011_campaign_batch: a worker's batch of CampaignSendJobs in one statement per phase.
--
-- A worker takes jobs from Redis in batches (up to 32) and sends their messages over one SMTP
-- connection. campaign_take loads and claims the enrollments of the whole batch in one call,
-- campaign_sent_batch records the messages the relay took in one call, and campaign_unclaim gives
-- back the claims of messages that were not handed to the relay after all. campaign_take loads each
-- enrollment with campaign_load (010). The worker no longer calls campaign_claim and campaign_sent;
-- they stay for the workers of the previous release that still run while this migration is applied,
-- and go in a later one.

-- What CampaignSendJob needs for each enrollment of p_enrollments (ord: its position, from 1) at
-- p_now, as campaign_load returns it, and for each one that takes a message step now the claimed
-- message: the email_messages row for the enrollment and the next step is written (Message-ID
-- p_locals[ord] at the sender's domain, attempt by job p_jids[ord]) or taken over when its last
-- attempt failed for the time being or was cut off more than ten minutes ago; fresh says the row
-- is new. message is NULL when no message is claimed: the step is no message, the enrollment or
-- its campaign is not active, nothing is due, the address is suppressed or empty, the variant is
-- missing, or the message is sent or being sent. An enrollment named twice is claimed for its first
-- position only. The active enrollments are locked in id order, the order every batch takes, and
-- loaded after the lock; one message per enrollment and step, ever.
CREATE FUNCTION campaign_take(p_enrollments bigint[], p_locals text[], p_jids text[], p_now timestamptz)
RETURNS TABLE (ord integer, state text, step integer, due boolean, campaign_status text, campaign_id bigint,
               campaign_name text, sender_name text, sender_email text, reply_to text, postal_address text,
               segment_id bigint, source_id bigint, email text, first_name text, last_name text,
               credential text, organization_name text, specialty text, city text, source_state text,
               coordinator_name text, coordinator_email text, coordinator_id bigint, kind text,
               suppressed text, rule_id bigint, action text, variant text, message_row bigint,
               subject text, html_template text, text_template text, message bigint, header text,
               fresh boolean)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
BEGIN
    PERFORM 1 FROM campaign_enrollments WHERE id = ANY (p_enrollments) AND state = 'active' ORDER BY id FOR UPDATE;
    RETURN QUERY
    WITH input AS (
        SELECT i.e, i.loc, i.j, i.n::integer AS n
          FROM unnest(p_enrollments, p_locals, p_jids) WITH ORDINALITY AS i (e, loc, j, n)
    ), firsts AS (
        SELECT DISTINCT ON (input.e) input.* FROM input ORDER BY input.e, input.n
    ), loaded AS (
        SELECT f.n AS first_n, f.e AS eid, f.loc, f.j, l.*
          FROM firsts f CROSS JOIN LATERAL campaign_load(f.e, p_now) l
    ), claimed AS (
        INSERT INTO email_messages AS m (enrollment_id, step, campaign_id, message_row, variant, source_id,
                                         recipient, message_id, jid, attempt_at)
        SELECT l.eid, l.step + 1, l.campaign_id, l.message_row, l.variant, l.source_id, l.email,
               l.loc || '@' || split_part(l.sender_email, '@', 2), l.j, p_now
          FROM loaded l
         WHERE l.state = 'active' AND l.campaign_status = 'active' AND l.due AND l.action = 'send'
           AND l.suppressed IS NULL AND l.message_row IS NOT NULL AND l.email <> ''
        ON CONFLICT (enrollment_id, step) DO UPDATE SET attempt_at = p_now, jid = excluded.jid
         WHERE m.status = 'sending' AND (m.attempt_at IS NULL OR m.attempt_at < p_now - interval '10 minutes')
        RETURNING m.enrollment_id, m.id, m.message_id, m.xmax = 0 AS fresh
    )
    SELECT i.n, l.state, l.step, l.due, l.campaign_status, l.campaign_id, l.campaign_name, l.sender_name,
           l.sender_email, l.reply_to, l.postal_address, l.segment_id, l.source_id, l.email, l.first_name,
           l.last_name, l.credential, l.organization_name, l.specialty, l.city, l.source_state,
           l.coordinator_name, l.coordinator_email, l.coordinator_id, l.kind, l.suppressed, l.rule_id, l.action,
           l.variant, l.message_row, l.subject, l.html_template, l.text_template, c.id, c.message_id, c.fresh
      FROM input i
      LEFT JOIN loaded l ON l.eid = i.e
      LEFT JOIN claimed c ON c.enrollment_id = i.e AND l.first_n = i.n
     ORDER BY i.n;
END $$;

-- The relay took the messages p_messages at p_now: each still 'sending' is sent and its enrollment
-- takes the step (as campaign_sent does, for the whole batch in one statement: an enrollment stopped
-- meanwhile stays stopped). The enrollments are locked first, in id order. Returns how many
-- messages were marked sent.
CREATE FUNCTION campaign_sent_batch(p_messages bigint[], p_now timestamptz) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    n integer;
BEGIN
    PERFORM 1 FROM campaign_enrollments
     WHERE id IN (SELECT enrollment_id FROM email_messages WHERE id = ANY (p_messages)) ORDER BY id FOR UPDATE;
    WITH m AS (
        UPDATE email_messages SET status = 'sent', sent_at = p_now, attempt_at = NULL, error = NULL
         WHERE id = ANY (p_messages) AND status = 'sending'
        RETURNING enrollment_id, step
    ), x AS (
        SELECT m.enrollment_id, m.step, nx.next_step_id, nx.next_action_at, nx.finished
          FROM m JOIN campaign_enrollments en ON en.id = m.enrollment_id
         CROSS JOIN LATERAL campaign_next(en.campaign_id, m.step, p_now, p_now, NULL) nx
    )
    UPDATE campaign_enrollments en
       SET step = x.step, step_at = p_now,
           next_step_id = CASE WHEN en.state = 'active' THEN x.next_step_id ELSE en.next_step_id END,
           next_action_at = CASE WHEN en.state = 'active' THEN x.next_action_at ELSE en.next_action_at END,
           enqueued_at = CASE WHEN en.state = 'active' THEN NULL ELSE en.enqueued_at END,
           state = CASE WHEN en.state = 'active' AND x.finished THEN 'finished' ELSE en.state END
      FROM x
     WHERE en.id = x.enrollment_id;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END $$;

-- Gives back the claims of messages p_messages (attempts by jobs p_jids) that were never handed to
-- the relay: a row the claim wrote (p_fresh) goes, as if never claimed; a row it took over is free
-- for the next attempt again. Rows sent, failed or taken by another attempt meanwhile stay.
CREATE FUNCTION campaign_unclaim(p_messages bigint[], p_jids text[], p_fresh boolean[]) RETURNS void
LANGUAGE sql AS $$
    DELETE FROM email_messages m
     USING unnest(p_messages, p_jids, p_fresh) AS u (id, j, fresh)
     WHERE m.id = u.id AND u.fresh AND m.status = 'sending' AND m.jid = u.j AND m.sent_at IS NULL;
    UPDATE email_messages m SET attempt_at = NULL
      FROM unnest(p_messages, p_jids, p_fresh) AS u (id, j, fresh)
     WHERE m.id = u.id AND NOT u.fresh AND m.status = 'sending' AND m.jid = u.j;
$$;
