-- v3: agent sessions (stretches of reporting without a silence longer than
-- store.SessionGap), for the agent's connection history.
CREATE TABLE node_sessions (
	node     text COLLATE "C" NOT NULL,
	start_ns int8 NOT NULL,
	end_ns   int8 NOT NULL,
	PRIMARY KEY (node, start_ns)
);
CREATE INDEX node_sessions_end ON node_sessions (node, end_ns);
