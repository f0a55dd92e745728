-- v1: findings partitioned by day of the finding's time (time_ns / 86400e9),
-- with indexed filter columns and the full finding as a protobuf blob; a
-- default partition for times outside the window that gets day partitions
-- (see partitions.go); nodes with their per-kind counts, and the same counts
-- per day so that dropping a day partition keeps them exact without a scan.
-- Text filter columns use the "C" collation: byte-wise comparison as in the
-- SQLite store, and LIKE 'prefix%' can use their indexes.
CREATE TABLE findings (
	id           uuid    NOT NULL,
	time_ns      bigint  NOT NULL,
	node         text    COLLATE "C" NOT NULL,
	kind         integer NOT NULL,
	severity     integer NOT NULL,
	namespace    text    COLLATE "C" NOT NULL DEFAULT '',
	pod          text    COLLATE "C" NOT NULL DEFAULT '',
	container_id text    COLLATE "C" NOT NULL DEFAULT '',
	image        text    COLLATE "C" NOT NULL DEFAULT '',
	sha256       text    COLLATE "C" NOT NULL DEFAULT '',
	search       text    NOT NULL DEFAULT '',
	received_ns  bigint  NOT NULL,
	body         bytea   NOT NULL,
	PRIMARY KEY (id, time_ns)
) PARTITION BY RANGE (time_ns);
CREATE TABLE findings_default PARTITION OF findings DEFAULT;
CREATE INDEX findings_time ON findings (time_ns, id);
CREATE INDEX findings_kind_time ON findings (kind, time_ns);
CREATE INDEX findings_node_time ON findings (node, time_ns);
CREATE INDEX findings_namespace_time ON findings (namespace, time_ns);
CREATE INDEX findings_pod_time ON findings (pod, time_ns);
CREATE INDEX findings_container ON findings (container_id);
CREATE INDEX findings_image ON findings (image);
CREATE INDEX findings_sha256 ON findings (sha256) WHERE sha256 <> '';

CREATE TABLE nodes (
	name          text   COLLATE "C" PRIMARY KEY,
	agent_version text   NOT NULL DEFAULT '',
	first_seen_ns bigint NOT NULL,
	last_seen_ns  bigint NOT NULL,
	findings      bigint NOT NULL DEFAULT 0
);
CREATE TABLE node_kinds (
	node  text    COLLATE "C" NOT NULL,
	kind  integer NOT NULL,
	count bigint  NOT NULL,
	PRIMARY KEY (node, kind)
);
CREATE TABLE node_kind_days (
	day   integer NOT NULL,
	node  text    COLLATE "C" NOT NULL,
	kind  integer NOT NULL,
	count bigint  NOT NULL,
	PRIMARY KEY (day, node, kind)
);
