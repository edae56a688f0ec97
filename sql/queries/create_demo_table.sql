-- `make demo`'s target table (the demo's throwaway database starts without it).
CREATE TABLE people (
    id        integer PRIMARY KEY,
    name      text NOT NULL,
    email     text,
    signed_up date,
    score     numeric(6, 2) CHECK (score >= 0),
    meta      jsonb
)
