-- Cancellations announced at once: when a job becomes CANCELLED, its id is sent on the channel
-- `autos_cancelled` as the change commits, so the worker processes transferring its documents
-- stop them now instead of at their next heartbeat.
CREATE FUNCTION autos_notify_cancelled() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('autos_cancelled', NEW.id::text);
    RETURN NULL;
END;
$$;

CREATE TRIGGER download_jobs_cancelled AFTER UPDATE OF status ON download_jobs
    FOR EACH ROW WHEN (NEW.status = 'CANCELLED' AND OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION autos_notify_cancelled();
