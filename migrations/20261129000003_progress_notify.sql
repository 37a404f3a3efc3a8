-- Live progress: every status change of a document or a job sends a notification on the
-- channel `autos_progress`, from inside the transaction that makes it, so it is delivered
-- exactly when the change commits, whichever process made it. Payload: the job id, then
-- `:` and the document id when a document changed.

CREATE FUNCTION autos_notify_document() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.job_id IS NOT NULL THEN
        PERFORM pg_notify('autos_progress', NEW.job_id::text || ':' || NEW.id::text);
    END IF;
    RETURN NULL;
END;
$$;

CREATE FUNCTION autos_notify_job() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('autos_progress', NEW.id::text);
    RETURN NULL;
END;
$$;

CREATE TRIGGER documents_progress AFTER UPDATE OF status ON documents
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION autos_notify_document();

CREATE TRIGGER download_jobs_created AFTER INSERT ON download_jobs
    FOR EACH ROW EXECUTE FUNCTION autos_notify_job();

CREATE TRIGGER download_jobs_progress AFTER UPDATE OF status ON download_jobs
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION autos_notify_job();
