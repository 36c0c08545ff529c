ALTER TABLE customers ALTER COLUMN id TYPE text COLLATE "default";
