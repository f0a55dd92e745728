package agent

import (
	"testing"

	loupev1 "github.com/loupe-dev/loupe/api/v1"
)

func scanFinding(path, sha string) *loupev1.Finding {
	return &loupev1.Finding{Id: "x", Kind: loupev1.Kind_KIND_DRIFT_FILE, Rule: "drift", File: &loupev1.File{Path: path, Sha256: sha, Change: "added"}}
}

func TestFingerprintIgnoresIdAndTime(t *testing.T) {
	a := scanFinding("/tmp/x", "abc")
	b := scanFinding("/tmp/x", "abc")
	b.Id, b.Summary = "other", "other words"
	if fingerprint(a) != fingerprint(b) {
		t.Error("the same drift file fingerprints differently")
	}
	if fingerprint(a) == fingerprint(scanFinding("/tmp/x", "def")) {
		t.Error("a changed file (new sha256) has the same fingerprint")
	}
}
