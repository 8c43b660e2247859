-- An entry is one user's: the same id may be in two users' logs (an export
-- of one account imported into another keeps its entries' ids), never twice
-- in one.
ALTER TABLE activity DROP CONSTRAINT activity_pkey;
ALTER TABLE activity ADD PRIMARY KEY (user_id, id);
