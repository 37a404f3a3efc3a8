-- Sources by court and the MNI model: which source a process was read from, CNJ secrecy
-- levels (0 public … 5), and the document an attached one (MNI `documentoVinculado`) belongs to.
ALTER TABLE processes
    ADD COLUMN source text NOT NULL DEFAULT 'default',
    ADD COLUMN sigilo smallint NOT NULL DEFAULT 0 CHECK (sigilo BETWEEN 0 AND 5);

ALTER TABLE documents
    ADD COLUMN sigilo smallint NOT NULL DEFAULT 0 CHECK (sigilo BETWEEN 0 AND 5),
    ADD COLUMN parent_source_id text;

-- Secrecy: a process read with a tenant's credential whose listing holds anything sealed
-- (nivelSigilo > 0) is that tenant's alone: its own row (and documents, and objects under
-- tenants/{tenant}/…), never found by another tenant. Public processes stay shared (owner null).
ALTER TABLE processes ADD COLUMN owner_tenant_id uuid REFERENCES tenants (id) ON DELETE CASCADE;
ALTER TABLE processes DROP CONSTRAINT processes_number_key;
CREATE UNIQUE INDEX processes_public_number ON processes (number) WHERE owner_tenant_id IS NULL;
CREATE UNIQUE INDEX processes_owned_number ON processes (number, owner_tenant_id)
    WHERE owner_tenant_id IS NOT NULL;

-- Each tenant's own credentials at its courts. The secrets (password, A1 certificate and its
-- password) are sealed together (ChaCha20-Poly1305 with AUTOS_ENCRYPTION_KEY, bound to tenant,
-- source and user): `sealed` is nonce || ciphertext, `key_id` names the key that sealed it.
-- `certificate_subject` says whose certificate it holds, for people. `refused_at`: the court
-- refused it; it is not presented again until replaced.
CREATE TABLE source_credentials (
    tenant_id uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    source text NOT NULL,
    username text NOT NULL,
    sealed bytea NOT NULL,
    key_id text NOT NULL,
    certificate_subject text,
    created_at timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz,
    last_error text,
    refused_at timestamptz,
    PRIMARY KEY (tenant_id, source)
);
