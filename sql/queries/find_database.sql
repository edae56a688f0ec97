-- Whether database $1 exists on this server (`importd run --embedded` creates it once).
SELECT 1 FROM pg_catalog.pg_database WHERE datname = $1
