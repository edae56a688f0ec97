-- The rows `make demo` loaded into its table.
SELECT count(*) FROM people
