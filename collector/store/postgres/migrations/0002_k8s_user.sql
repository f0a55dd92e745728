-- v2: the Kubernetes user of K8S_* audit findings (loupe query --user),
-- indexed only where set.
ALTER TABLE findings ADD COLUMN k8s_user text COLLATE "C" NOT NULL DEFAULT '';
CREATE INDEX findings_user_time ON findings (k8s_user, time_ns) WHERE k8s_user <> '';
