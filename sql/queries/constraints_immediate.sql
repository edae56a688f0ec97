-- Check the transaction's DEFERRABLE constraints from now on at the end of each
-- statement, and those it has deferred so far at once (an error here names one that
-- fails). An import that commits chunk by chunk sets it when its transaction begins, so
-- a row that breaks such a constraint fails its chunk's COPY and is found and rejected
-- at its line like any other; an atomic import sets it just before it completes, so a
-- violation is told as what it is instead of as a failed COMMIT.
SET CONSTRAINTS ALL IMMEDIATE
