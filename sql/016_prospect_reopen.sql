-- 016_prospect_reopen: a prospect closed because its NPI was deactivated reopens when the NPI is
-- reactivated.
--
-- The NPPES import makes a prospect inactive when its NPI is deactivated, and now notes when it did.
-- A later full or weekly file that brings the NPI back (a reactivation date after the deactivation)
-- makes such a source a prospect again. A source a coordinator has changed since (to active or a
-- prospect, even if later back to inactive) has lost the note and is left as the coordinator set it.

ALTER TABLE referral_sources ADD COLUMN closed_on_deactivation_at timestamptz;
COMMENT ON COLUMN referral_sources.closed_on_deactivation_at IS
    'When the NPPES import made this prospect inactive because its NPI was deactivated; NULL otherwise.';

CREATE FUNCTION referral_sources_clear_closure() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.closed_on_deactivation_at := NULL;
    RETURN NEW;
END $$;

-- Any change of status away from inactive clears the note.
CREATE TRIGGER referral_sources_closure BEFORE UPDATE OF status ON referral_sources
    FOR EACH ROW WHEN (NEW.status <> 'inactive' AND NEW.closed_on_deactivation_at IS NOT NULL)
    EXECUTE FUNCTION referral_sources_clear_closure();
