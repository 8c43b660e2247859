-- An entry is one user's: the same id may be in two users' logs (an export
-- of one account imported into another keeps its entries' ids), never twice
-- in one. SQLite cannot change a primary key: the table is rebuilt.
CREATE TABLE activity_per_user (
    id          BLOB NOT NULL,
    user_id     BLOB NOT NULL,
    kind        TEXT NOT NULL,
    occurred_us INTEGER NOT NULL,
    ip          TEXT NOT NULL,
    user_agent  TEXT NOT NULL,
    details     TEXT NOT NULL,
    PRIMARY KEY (user_id, id)
);
INSERT INTO activity_per_user (id, user_id, kind, occurred_us, ip, user_agent, details)
    SELECT id, user_id, kind, occurred_us, ip, user_agent, details FROM activity;
DROP TABLE activity;
ALTER TABLE activity_per_user RENAME TO activity;
CREATE INDEX activity_user_time ON activity (user_id, occurred_us DESC, id DESC);
CREATE INDEX activity_user_kind_time ON activity (user_id, kind, occurred_us DESC, id DESC);
CREATE INDEX activity_time ON activity (occurred_us);
