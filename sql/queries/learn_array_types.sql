-- The array types importd's statements send, learned by a daemon's connection when it
-- opens (db._init_daemon_connection): asyncpg knows text[] by itself but looks the others
-- up in the catalog the first time a connection's statement uses them. All NULL.
SELECT $1::bigint[] IS NULL, $2::int[] IS NULL, $3::smallint[] IS NULL,
       $4::float8[] IS NULL, $5::timestamptz[] IS NULL
