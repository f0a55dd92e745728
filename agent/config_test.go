package agent

import (
	"strings"
	"testing"
	"time"
)

func TestDefaultConfigIsValid(t *testing.T) {
	c := DefaultConfig()
	c.NodeName = "n1"
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestValidateSaysWhatToFix(t *testing.T) {
	c := DefaultConfig()
	c.NodeName = ""
	c.HostRoot = "host"
	c.RescanInterval = time.Second
	c.ScanConcurrency = 0
	c.RingBufferBytes = 5000
	c.SpoolMaxBytes = 10
	c.TLS.CertFile = "agent.crt"
	err := c.Validate()
	if err == nil {
		t.Fatal("invalid config accepted")
	}
	for _, want := range []string{"--node-name", "--host-root", "--rescan-interval", "--scan-concurrency",
		"--ring-buffer-bytes", "--spool-max-bytes", "--tls-cert and --tls-key"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q: %v", want, err)
		}
	}
}

func TestNodeNameFromDownwardAPI(t *testing.T) {
	t.Setenv("NODE_NAME", "worker-7")
	if got := DefaultNodeName(); got != "worker-7" {
		t.Fatalf("DefaultNodeName = %q", got)
	}
	t.Setenv("NODE_NAME", "")
	if DefaultNodeName() == "" {
		t.Fatal("no hostname fallback")
	}
}
