-- A claim looks a document up by (job, status, id). With only (job_id, status) indexed, and
-- without statistics on a young table, the planner scanned every PENDING document of the job
-- for each claim — quadratic in the job's size. With the id in the index the lookup is one
-- descent, whatever the statistics say; the index still serves "a job's documents by status".
CREATE INDEX documents_job_status_id ON documents (job_id, status, id);
DROP INDEX documents_job_status;
