-- 002_scheduler: what outreachd has claimed and enqueued, so that no work is queued twice.

-- One daily digest per coordinator, local date and kind (the coordinator's own, or the manager's
-- escalation digest). A row is claimed before the job is pushed and marked enqueued after; a claim
-- left unmarked (the daemon died between the two) is pushed again with the same jid.
CREATE TABLE digest_runs (
    coordinator_id bigint NOT NULL REFERENCES coordinators (id) ON DELETE CASCADE,
    local_date     date NOT NULL,
    kind           text NOT NULL DEFAULT 'coordinator' CHECK (kind IN ('coordinator', 'manager')),
    jid            text NOT NULL,
    claimed_at     timestamptz NOT NULL DEFAULT now(),
    enqueued_at    timestamptz,
    PRIMARY KEY (coordinator_id, local_date, kind)
);
CREATE INDEX digest_runs_unenqueued_idx ON digest_runs (claimed_at) WHERE enqueued_at IS NULL;
