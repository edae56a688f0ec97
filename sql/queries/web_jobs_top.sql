-- For importd web's job list: the cursor of the first page (past the newest id).
SELECT coalesce(max(id), 0) + 1 FROM public.import_jobs
