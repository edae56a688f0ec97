-- For importd web's search: whether job $1 exists.
SELECT EXISTS (SELECT 1 FROM public.import_jobs WHERE id = $1)
