-- The latest observed state of every resource, kept beside the observations so that a snapshot
-- stores only what changed. Before this, every hourly snapshot stored one observation per
-- resource it listed (about 165k rows an hour at 100k apps, over a billion a year), although
-- an observation that repeats the state already known changes no measurement: the state is
-- carried forward from the last observation either way.
--
-- A row holds the resource's newest observation by (observed_at, seq). It is maintained by a
-- statement trigger on billing.observation, so every writer (snapshots, usage events, the
-- rebuilt history, AWS gauges) keeps it true without knowing about it. Readers use it to ask
-- "is this what we already knew at this instant?" only when the row is at or before that
-- instant; an observation newer than the instant (a usage event stamped after a snapshot was
-- taken) makes them store the observation, which is always safe.
CREATE TABLE billing.resource_state (
    resource_id bigint PRIMARY KEY,
    observed_at timestamptz NOT NULL,
    seq bigint NOT NULL,
    resource_kind_id bigint NOT NULL,
    rate bigint NOT NULL
);

INSERT INTO billing.resource_state (resource_id, observed_at, seq, resource_kind_id, rate)
SELECT DISTINCT ON (resource_id) resource_id, observed_at, seq, resource_kind_id, rate
  FROM billing.observation
 ORDER BY resource_id, observed_at DESC, seq DESC;

-- Rows of one statement are folded to each resource's newest first (one statement may add
-- several observations of a resource: a page of usage events), and in resource order, so two
-- landings at once take the rows' locks in the same order.
CREATE FUNCTION billing.keep_resource_state() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO billing.resource_state AS s (resource_id, observed_at, seq, resource_kind_id, rate)
    SELECT DISTINCT ON (resource_id) resource_id, observed_at, seq, resource_kind_id, rate
      FROM added
     ORDER BY resource_id, observed_at DESC, seq DESC
    ON CONFLICT (resource_id) DO UPDATE
       SET observed_at = EXCLUDED.observed_at, seq = EXCLUDED.seq,
           resource_kind_id = EXCLUDED.resource_kind_id, rate = EXCLUDED.rate
     WHERE (EXCLUDED.observed_at, EXCLUDED.seq) > (s.observed_at, s.seq);
    RETURN NULL;
END;
$$;

CREATE TRIGGER observation_keeps_resource_state
    AFTER INSERT ON billing.observation
    REFERENCING NEW TABLE AS added
    FOR EACH STATEMENT EXECUTE FUNCTION billing.keep_resource_state();
