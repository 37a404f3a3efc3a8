-- Sources by court and the MNI model: which source a process was read from, CNJ secrecy
-- levels (0 public … 5), and the document an attached one (MNI `documentoVinculado`) belongs to.
ALTER TABLE processes
    ADD COLUMN source text NOT NULL DEFAULT 'default',
    ADD COLUMN sigilo smallint NOT NULL DEFAULT 0 CHECK (sigilo BETWEEN 0 AND 5);

ALTER TABLE documents
    ADD COLUMN sigilo smallint NOT NULL DEFAULT 0 CHECK (sigilo BETWEEN 0 AND 5),
    ADD COLUMN parent_source_id text;
