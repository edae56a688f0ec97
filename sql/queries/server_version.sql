-- The server's version, as a number (`importd doctor` judges it) and as text.
SELECT current_setting('server_version_num')::int AS n,
       current_setting('server_version') AS v
