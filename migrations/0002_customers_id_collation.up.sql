-- Customer ids are time-sortable only byte by byte ('0'-'9' < 'A'-'Z' < 'a'-'z'),
-- but a database created with a linguistic collation (en_US.UTF-8, …) orders
-- 'a' before 'B'. List cursors compare ids (id < $cursor ORDER BY id DESC), so
-- the column must use the "C" collation to make "newest first" true everywhere.
-- Changing it rebuilds the primary key and the list indexes that include id.
ALTER TABLE customers ALTER COLUMN id TYPE text COLLATE "C";
