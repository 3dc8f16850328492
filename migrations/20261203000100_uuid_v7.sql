-- Time-ordered ids (UUIDv7, RFC 9562: the Unix millisecond, then random bits)
-- for the rows that statements insert with an id of their own making. The
-- service makes the same ids in Rust (`Uuid::now_v7`). A time-ordered id
-- puts each insert at the right edge of the indexes on ids, where a random
-- one (`gen_random_uuid()`, v4) lands on a random leaf page: more pages
-- dirty and split, and after each checkpoint the first change of every leaf
-- page writes the whole page to the WAL. PostgreSQL 18 has `uuidv7()`; this
-- works from 13 on.
CREATE FUNCTION reten_uuid_v7() RETURNS uuid
LANGUAGE sql VOLATILE PARALLEL SAFE AS $$
  SELECT encode(
    set_bit(set_bit(
      overlay(uuid_send(gen_random_uuid())
              PLACING substring(int8send(floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint) FROM 3)
              FROM 1 FOR 6),
      52, 1), 53, 1),
    'hex')::uuid
$$;
