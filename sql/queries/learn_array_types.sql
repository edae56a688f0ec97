-- Nothing but the types of its parameters: the array types importd's statements send
-- (text[] aside, which asyncpg knows by itself). A daemon's connection runs it once when
-- it opens, so that asyncpg looks them all up in the catalog then, in one query, instead
-- of the first time each connection meets a statement that uses them (db.py).
SELECT $1::bigint[] IS NULL, $2::int[] IS NULL, $3::smallint[] IS NULL,
       $4::float8[] IS NULL, $5::timestamptz[] IS NULL
