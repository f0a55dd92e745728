package spool

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	loupev1 "github.com/loupe-dev/loupe/api/v1"
)

func finding(sev loupev1.Severity, summary string) *loupev1.Finding {
	return &loupev1.Finding{
		Id: uuid.Must(uuid.NewV7()).String(), Time: timestamppb.Now(), Node: "n1",
		Kind: loupev1.Kind_KIND_EXEC, Severity: sev, Summary: summary,
	}
}

func TestOrderAckAndReopen(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, 0)
	if err != nil {
		t.Fatal(err)
	}
	in := []*loupev1.Finding{
		finding(loupev1.Severity_SEVERITY_INFO, "i1"),
		finding(loupev1.Severity_SEVERITY_HIGH, "h1"),
		finding(loupev1.Severity_SEVERITY_INFO, "i2"),
		finding(loupev1.Severity_SEVERITY_CRITICAL, "c1"),
		finding(loupev1.Severity_SEVERITY_HIGH, "h2"),
	}
	if err := s.Append(in); err != nil {
		t.Fatal(err)
	}
	got, err := s.Peek(10, nil)
	if err != nil {
		t.Fatal(err)
	}
	if order := summaries(got); order != "c1 h1 h2 i1 i2" {
		t.Fatalf("peek order %q, want highest severity first, oldest first", order)
	}
	if !proto.Equal(got[0].Finding, in[3]) {
		t.Fatalf("finding changed in the spool: %v", got[0].Finding)
	}
	// Skip in-flight entries.
	rest, _ := s.Peek(10, map[Key]bool{got[0].Key: true, got[1].Key: true})
	if order := summaries(rest); order != "h2 i1 i2" {
		t.Fatalf("peek with skip: %q", order)
	}
	if err := s.Ack([]Key{got[0].Key, got[1].Key, got[1].Key}); err != nil {
		t.Fatal(err)
	}
	st := s.Stats()
	if st.Findings != 3 || st.Bytes <= 0 {
		t.Fatalf("stats after ack: %+v", st)
	}
	s.Close()

	s2, err := Open(dir, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	got2, _ := s2.Peek(10, nil)
	if order := summaries(got2); order != "h2 i1 i2" {
		t.Fatalf("after reopen: %q", order)
	}
	if st2 := s2.Stats(); st2.Findings != 3 || st2.Bytes != st.Bytes {
		t.Fatalf("stats not rebuilt on reopen: %+v vs %+v", st2, st)
	}
	// New appends after reopen come after the old ones.
	s2.Append([]*loupev1.Finding{finding(loupev1.Severity_SEVERITY_INFO, "i3")})
	got3, _ := s2.Peek(10, nil)
	if order := summaries(got3); order != "h2 i1 i2 i3" {
		t.Fatalf("after reopen+append: %q", order)
	}
}

func summaries(es []Entry) string {
	var parts []string
	for _, e := range es {
		parts = append(parts, e.Finding.GetSummary())
	}
	return strings.Join(parts, " ")
}

func TestFullSpoolDropsLowestSeverityFirstAndCounts(t *testing.T) {
	one, _ := proto.Marshal(finding(loupev1.Severity_SEVERITY_INFO, "x00"))
	bound := int64(len(one)) * 10 // room for ~10 findings
	s, err := Open(t.TempDir(), bound)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var batch []*loupev1.Finding
	for i := 0; i < 5; i++ {
		batch = append(batch, finding(loupev1.Severity_SEVERITY_HIGH, fmt.Sprintf("h%02d", i)))
		batch = append(batch, finding(loupev1.Severity_SEVERITY_INFO, fmt.Sprintf("i%02d", i)))
	}
	if err := s.Append(batch); err != nil {
		t.Fatal(err)
	}
	// Five more HIGH: the INFO findings must go, oldest first; no HIGH may be lost.
	var more []*loupev1.Finding
	for i := 5; i < 10; i++ {
		more = append(more, finding(loupev1.Severity_SEVERITY_HIGH, fmt.Sprintf("h%02d", i)))
	}
	if err := s.Append(more); err != nil {
		t.Fatal(err)
	}
	st := s.Stats()
	if st.Bytes > bound {
		t.Fatalf("spool over its bound: %d > %d", st.Bytes, bound)
	}
	if st.Dropped[loupev1.Severity_SEVERITY_INFO] == 0 || st.Dropped[loupev1.Severity_SEVERITY_HIGH] != 0 {
		t.Fatalf("drops = %v, want INFO dropped and no HIGH", st.Dropped)
	}
	all, _ := s.Peek(100, nil)
	highs := 0
	for _, e := range all {
		if e.Key.Severity == loupev1.Severity_SEVERITY_HIGH {
			highs++
		}
	}
	if highs != 10 {
		t.Fatalf("%d HIGH findings kept, want all 10 (%s)", highs, summaries(all))
	}
	if int64(len(all))+int64(st.Dropped[loupev1.Severity_SEVERITY_INFO]) != 15 {
		t.Fatalf("kept %d + dropped %d != 15 appended", len(all), st.Dropped[loupev1.Severity_SEVERITY_INFO])
	}
	// The surviving INFO findings are the newest ones.
	if len(all) > 10 && !strings.HasPrefix(all[len(all)-1].Finding.GetSummary(), "i04") {
		t.Fatalf("newest INFO should survive: %s", summaries(all))
	}
	if err := s.Append([]*loupev1.Finding{{Id: "big", Summary: strings.Repeat("x", int(bound)+1)}}); err == nil {
		t.Fatal("a finding larger than the bound was accepted")
	}
}

func TestSecondOpenIsRefusedClearly(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	_, err = Open(dir, 0)
	if err == nil || !strings.Contains(err.Error(), "another") {
		t.Fatalf("want a 'locked by another process' error, got %v", err)
	}
}

// TestCrashDuringAppendLosesNothingAcknowledged kills a writer process with
// SIGKILL while it appends, then checks every append it reported complete is
// still in the reopened spool.
func TestCrashDuringAppendLosesNothingAcknowledged(t *testing.T) {
	if dir := os.Getenv("LOUPE_SPOOL_CRASH_DIR"); dir != "" {
		crashWriter(dir)
		return
	}
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashDuringAppendLosesNothingAcknowledged$")
	cmd.Env = append(os.Environ(), "LOUPE_SPOOL_CRASH_DIR="+dir)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(out)
	acked := 0
	deadline := time.Now().Add(20 * time.Second)
	for sc.Scan() {
		n, err := strconv.Atoi(strings.TrimSpace(sc.Text()))
		if err != nil {
			continue
		}
		acked = n
		if acked >= 40 || time.Now().After(deadline) {
			break
		}
	}
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	if acked == 0 {
		t.Fatal("writer reported no append")
	}
	s, err := Open(dir, 0)
	if err != nil {
		t.Fatalf("reopen after SIGKILL: %v", err)
	}
	defer s.Close()
	got, err := s.Peek(1<<20, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) < acked*50 {
		t.Fatalf("%d findings after crash, but %d appends of 50 were acknowledged", len(got), acked)
	}
	if st := s.Stats(); st.Findings != int64(len(got)) {
		t.Fatalf("stats %d != entries %d", st.Findings, len(got))
	}
}

func crashWriter(dir string) {
	s, err := Open(dir, 0)
	if err != nil {
		fmt.Println("open:", err)
		os.Exit(1)
	}
	for i := 1; ; i++ {
		batch := make([]*loupev1.Finding, 50)
		for j := range batch {
			batch[j] = finding(loupev1.Severity(1+j%5), strings.Repeat("payload ", 20))
		}
		if err := s.Append(batch); err != nil {
			fmt.Println("append:", err)
			os.Exit(1)
		}
		fmt.Println(i)
	}
}
