-- Faults waste nothing.
--
-- A document's `attempts` now count transfers that ended with a result about the document
-- itself (stored, or a failure of its own: its bytes, its status at the source). A transfer
-- cut short by the platform (its worker died or was stopped) is counted apart, so that a
-- document that keeps bringing its worker down still ends, after many more of them.
ALTER TABLE documents ADD COLUMN interruptions integer NOT NULL DEFAULT 0
    CHECK (interruptions >= 0);

-- Outages of the dependencies the workers need (S3, the court source), as the workers see
-- them: since when, and what the last failure said. Every process can tell why work waits.
CREATE TABLE outages (
    dependency text PRIMARY KEY CHECK (dependency IN ('storage', 'source')),
    since timestamptz NOT NULL,
    reason text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
