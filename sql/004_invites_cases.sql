-- 004_invites_cases: calendar invites for scheduled activities, and SLA alerts for open cases.

-- Where an activity takes place and how long it lasts, for the calendar invite.
ALTER TABLE activities ADD COLUMN location text;
ALTER TABLE activities ADD COLUMN duration_minutes integer NOT NULL DEFAULT 30
    CHECK (duration_minutes BETWEEN 5 AND 1440);
-- The invite's SEQUENCE (RFC 5545): raised by the database whenever what the invite shows changes;
-- invite_sent_sequence is the one the coordinator has (NULL: none sent yet).
ALTER TABLE activities ADD COLUMN invite_sequence integer NOT NULL DEFAULT 0;
ALTER TABLE activities ADD COLUMN invite_sent_sequence integer;

CREATE FUNCTION outreach_activity_sequence() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF (NEW.scheduled_at, NEW.canceled_at, NEW.subject, NEW.notes, NEW.location, NEW.duration_minutes,
        NEW.coordinator_id, NEW.kind)
       IS DISTINCT FROM
       (OLD.scheduled_at, OLD.canceled_at, OLD.subject, OLD.notes, OLD.location, OLD.duration_minutes,
        OLD.coordinator_id, OLD.kind) THEN
        NEW.invite_sequence := OLD.invite_sequence + 1;
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER activities_sequence BEFORE UPDATE ON activities
    FOR EACH ROW EXECUTE FUNCTION outreach_activity_sequence();

-- Activities whose coordinator lacks the current invite (or cancellation): what outreachd scans.
CREATE INDEX activities_invite_due_idx ON activities (scheduled_at)
    WHERE scheduled_at IS NOT NULL AND coordinator_id IS NOT NULL AND completed_at IS NULL
      AND (invite_sent_sequence IS NULL OR invite_sent_sequence < invite_sequence);

-- The highest alert level sent for a case: 1 its assignee, 2 the assignee's manager.
ALTER TABLE cases ADD COLUMN alerted_level smallint NOT NULL DEFAULT 0 CHECK (alerted_level BETWEEN 0 AND 2);
CREATE INDEX cases_alert_idx ON cases (opened_at) WHERE status <> 'resolved' AND alerted_level < 2;

ALTER TABLE alert_emails DROP CONSTRAINT alert_emails_kind_check;
ALTER TABLE alert_emails ADD CONSTRAINT alert_emails_kind_check
    CHECK (kind IN ('digest', 'manager_digest', 'invite', 'case'));
