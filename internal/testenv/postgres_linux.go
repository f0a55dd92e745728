package testenv

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// pgDirPrefix starts the name of every private PostgreSQL directory in
// os.TempDir(); the owning test process's PID follows.
const pgDirPrefix = "loupe-pg-"

// Postgres is a private PostgreSQL cluster for one test: initdb'd in a
// temporary directory owned by the postgres user, serving on its own
// loopback port with trust authentication, stopped and removed when the test
// ends. Its methods are safe for concurrent use.
//
//	pg := testenv.StartPostgres(t)  // skips/fails without root or Debian's postgresql
//	dsn := pg.NewDatabase(t)        // postgres://postgres@127.0.0.1:PORT/loupe_N?sslmode=disable
//	pg.Restart(t); pg.Stop(t); pg.Start(t) // same data, same port
type Postgres struct {
	dir, data, bin string
	port           int
	uid, gid       int

	settings map[string]string
	keep     bool // Close keeps dir

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
	dbs    int
	logf   *os.File
}

// PostgresBinDir finds the newest installed PostgreSQL server's bin
// directory (Debian: /usr/lib/postgresql/<major>/bin), or "".
func PostgresBinDir() string {
	ms, _ := filepath.Glob("/usr/lib/postgresql/*/bin/postgres")
	sort.Slice(ms, func(i, j int) bool {
		vi, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(ms[i]))))
		vj, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(ms[j]))))
		return vi > vj
	})
	if len(ms) == 0 {
		return ""
	}
	return filepath.Dir(ms[0])
}

// StartPostgres initdb's and starts a private cluster for t, removed when t
// ends. It skips (or fails with LOUPE_REQUIRE_E2E=1) without root or the
// postgresql package, and fails when the cluster cannot start.
func StartPostgres(t testing.TB) *Postgres {
	t.Helper()
	RequireRoot(t)
	if PostgresBinDir() == "" {
		Unavailable(t, "PostgreSQL server is not installed (Debian package postgresql)")
	}
	if _, err := user.Lookup("postgres"); err != nil {
		Unavailable(t, "no postgres user (Debian package postgresql)")
	}
	p, err := LaunchPostgres("", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

// LaunchPostgres is StartPostgres for programs (benchmarks): the caller
// Closes the cluster. With dir set, the cluster lives there and is kept by
// Close (a later launch on the same dir reuses its data); else in a new
// temporary directory, removed by Close. settings are extra server
// settings (name → value).
func LaunchPostgres(dir string, settings map[string]string) (*Postgres, error) {
	bin := PostgresBinDir()
	if bin == "" {
		return nil, errors.New("PostgreSQL server is not installed (Debian package postgresql; run scripts/deps.sh)")
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("no postgres user: %w", err)
	}
	cleanupStalePostgres()
	p := &Postgres{bin: bin, settings: settings, dir: dir, keep: dir != ""}
	p.uid, _ = strconv.Atoi(u.Uid)
	p.gid, _ = strconv.Atoi(u.Gid)
	if p.dir == "" {
		if p.dir, err = os.MkdirTemp("", fmt.Sprintf("%s%d-", pgDirPrefix, os.Getpid())); err != nil {
			return nil, err
		}
	}
	if err := p.init(); err != nil {
		p.Close()
		return nil, err
	}
	return p, nil
}

func (p *Postgres) init() error {
	p.data = filepath.Join(p.dir, "data")
	for _, d := range []string{p.dir, p.data} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return err
		}
		if err := os.Chown(d, p.uid, p.gid); err != nil {
			return err
		}
	}
	var err error
	if p.logf, err = os.Create(filepath.Join(p.dir, "postgres.log")); err != nil {
		return err
	}
	if _, err := os.Stat(filepath.Join(p.data, "PG_VERSION")); err != nil {
		initdb := p.command(filepath.Join(p.bin, "initdb"), "-D", p.data, "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8", "--locale=C")
		if out, err := initdb.CombinedOutput(); err != nil {
			return fmt.Errorf("initdb: %v\n%s", err, out)
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	p.port = l.Addr().(*net.TCPAddr).Port
	l.Close()
	if err := p.start(); err != nil {
		return fmt.Errorf("start PostgreSQL: %v\n%s", err, p.logTail())
	}
	return nil
}

func (p *Postgres) command(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(name, args...)
	cmd.Dir = p.dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(p.uid), Gid: uint32(p.gid)}, Pdeathsig: syscall.SIGKILL}
	return cmd
}

// Port is the cluster's TCP port on 127.0.0.1.
func (p *Postgres) Port() int { return p.port }

// Dir is the cluster's directory (data/ and postgres.log below it).
func (p *Postgres) Dir() string { return p.dir }

// DSN is the URL of database db as the superuser postgres.
func (p *Postgres) DSN(db string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", p.port, db)
}

// DatabaseDSN creates database name unless it exists and returns its DSN.
func (p *Postgres) DatabaseDSN(name string) (string, error) {
	out, err := p.psql("postgres", "SELECT count(*) FROM pg_database WHERE datname = '"+name+"'")
	if err != nil {
		return "", err
	}
	if out == "0" {
		if _, err := p.psql("postgres", "CREATE DATABASE "+name); err != nil {
			return "", err
		}
	}
	return p.DSN(name), nil
}

// NewDatabase creates a fresh, empty database and returns its DSN.
func (p *Postgres) NewDatabase(t testing.TB) string {
	t.Helper()
	dsn, err := p.CreateDatabase()
	if err != nil {
		t.Fatal(err)
	}
	return dsn
}

// CreateDatabase creates a fresh, empty database and returns its DSN.
func (p *Postgres) CreateDatabase() (string, error) {
	p.mu.Lock()
	p.dbs++
	name := fmt.Sprintf("loupe_%d", p.dbs)
	p.mu.Unlock()
	if _, err := p.psql("postgres", "CREATE DATABASE "+name); err != nil {
		return "", err
	}
	return p.DSN(name), nil
}

// SQL runs statements with psql in database db and returns psql's output
// (unaligned, tuples only).
func (p *Postgres) SQL(t testing.TB, db, sql string) string {
	t.Helper()
	out, err := p.psql(db, sql)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func (p *Postgres) psql(db, sql string) (string, error) {
	cmd := p.command(filepath.Join(p.bin, "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
		"-h", "127.0.0.1", "-p", strconv.Itoa(p.port), "-U", "postgres", "-d", db, "-c", sql)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("psql %q: %v\n%s", sql, err, out)
	}
	return strings.TrimSpace(string(out)), nil
}

// Start starts the server (after Stop) and waits until it accepts connections.
func (p *Postgres) Start(t testing.TB) {
	t.Helper()
	if err := p.start(); err != nil {
		t.Fatalf("start PostgreSQL: %v\n%s", err, p.logTail())
	}
}

func (p *Postgres) start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil {
		return errors.New("already running")
	}
	cmd := p.command(filepath.Join(p.bin, "postgres"), "-D", p.data, "-p", strconv.Itoa(p.port), "-k", p.dir,
		"-c", "listen_addresses=127.0.0.1", "-c", "max_connections=200", "-c", "shared_buffers=256MB",
		"-c", "logging_collector=off", "-c", "log_min_messages=warning")
	for k, v := range p.settings {
		cmd.Args = append(cmd.Args, "-c", k+"="+v)
	}
	cmd.Stdout, cmd.Stderr = p.logf, p.logf
	cmd.SysProcAttr.Setpgid = true // Kill ends the postmaster and its backends together
	if err := cmd.Start(); err != nil {
		return err
	}
	p.cmd, p.exited = cmd, make(chan struct{})
	go func(exited chan struct{}) { _ = cmd.Wait(); close(exited) }(p.exited)
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-p.exited:
			p.cmd = nil
			return errors.New("postgres exited during start-up")
		default:
		}
		isReady := p.command(filepath.Join(p.bin, "pg_isready"), "-q", "-h", "127.0.0.1", "-p", strconv.Itoa(p.port))
		if isReady.Run() == nil {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return errors.New("postgres did not accept connections within 30s")
}

// Stop shuts the server down (fast shutdown: open sessions are ended).
func (p *Postgres) Stop(t testing.TB) {
	t.Helper()
	if err := p.stop(syscall.SIGINT); err != nil {
		t.Fatalf("stop PostgreSQL: %v", err)
	}
}

// Kill ends the server with SIGKILL, as a crash would (recovery at next Start).
func (p *Postgres) Kill(t testing.TB) {
	t.Helper()
	if err := p.stop(syscall.SIGKILL); err != nil {
		t.Fatalf("kill PostgreSQL: %v", err)
	}
}

// Restart stops and starts the server.
func (p *Postgres) Restart(t testing.TB) {
	t.Helper()
	p.Stop(t)
	p.Start(t)
}

func (p *Postgres) stop(sig syscall.Signal) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return nil
	}
	pid := p.cmd.Process.Pid
	if sig == syscall.SIGKILL {
		_ = syscall.Kill(-pid, sig) // the whole server, backends included
	} else {
		_ = syscall.Kill(pid, sig)
	}
	select {
	case <-p.exited:
	case <-time.After(30 * time.Second):
		_ = syscall.Kill(-pid, syscall.SIGKILL)
		<-p.exited
	}
	p.cmd = nil
	// Wait for the backends too, so a restart finds no old shared memory in use.
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if syscall.Kill(-pid, 0) != nil {
			break
		}
	}
	return nil
}

func (p *Postgres) logTail() string {
	b, _ := os.ReadFile(filepath.Join(p.dir, "postgres.log"))
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// Close stops the cluster and removes its directory.
func (p *Postgres) Close() {
	_ = p.stop(syscall.SIGINT)
	if p.logf != nil {
		p.logf.Close()
	}
	if !p.keep {
		_ = os.RemoveAll(p.dir)
	}
}

// killOwned kills the processes whose command line names dir and waits up
// to 5 s for them to go.
func killOwned(dir string) {
	deadline := time.Now().Add(5 * time.Second)
	for {
		var left []int
		for _, pid := range pids() {
			if cmdlineContains(pid, dir) {
				left = append(left, pid)
			}
		}
		if len(left) == 0 || time.Now().After(deadline) {
			return
		}
		for _, pid := range left {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// cleanupStalePostgres removes the clusters of test processes that died.
func cleanupStalePostgres() {
	ms, _ := filepath.Glob(filepath.Join(os.TempDir(), pgDirPrefix+"*"))
	for _, d := range ms {
		rest := strings.TrimPrefix(filepath.Base(d), pgDirPrefix)
		pid, err := strconv.Atoi(strings.SplitN(rest, "-", 2)[0])
		if err != nil {
			continue
		}
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err == nil {
			continue
		}
		killOwned(d)
		_ = os.RemoveAll(d)
	}
}
