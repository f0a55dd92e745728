package bpf

import (
	"encoding/binary"
	"slices"
	"testing"
	"time"
	"unsafe"
)

// The decoder's offsets must match the C struct as compiled (bpf2go's execEvent).
func TestHeaderLayoutMatchesKernelStruct(t *testing.T) {
	var e execEvent
	if got := unsafe.Sizeof(e); got != headerSize {
		t.Fatalf("sizeof(struct event) = %d, decoder assumes %d", got, headerSize)
	}
	offsets := map[string][2]uintptr{
		"ts_ns": {unsafe.Offsetof(e.TsNs), 0}, "cgroup_id": {unsafe.Offsetof(e.CgroupId), 8},
		"mnt_ns": {unsafe.Offsetof(e.MntNs), 16}, "ino": {unsafe.Offsetof(e.Ino), 24},
		"dev": {unsafe.Offsetof(e.Dev), 32}, "pid": {unsafe.Offsetof(e.Pid), 36},
		"tid": {unsafe.Offsetof(e.Tid), 40}, "ppid": {unsafe.Offsetof(e.Ppid), 44},
		"uid": {unsafe.Offsetof(e.Uid), 48}, "gid": {unsafe.Offsetof(e.Gid), 52},
		"euid": {unsafe.Offsetof(e.Euid), 56}, "ret": {unsafe.Offsetof(e.Ret), 60},
		"type": {unsafe.Offsetof(e.Type), 64}, "flags": {unsafe.Offsetof(e.Flags), 66},
		"filename_len": {unsafe.Offsetof(e.FilenameLen), 68}, "interp_len": {unsafe.Offsetof(e.InterpLen), 70},
		"path_len": {unsafe.Offsetof(e.PathLen), 72}, "argv_len": {unsafe.Offsetof(e.ArgvLen), 74},
		"argc": {unsafe.Offsetof(e.Argc), 76}, "comm": {unsafe.Offsetof(e.Comm), 80},
	}
	for name, o := range offsets {
		if o[0] != o[1] {
			t.Errorf("offset of %s = %d, decoder uses %d", name, o[0], o[1])
		}
	}
}

type rec struct {
	typ                            uint8
	flags                          uint16
	ret                            int32
	filename, interp, path, argv   []byte
	pid, tid, ppid, uid, gid, euid uint32
	cg, mntns, ino, ts             uint64
	dev                            uint32
	comm                           string
	argc                           uint16
}

func (r rec) bytes() []byte {
	b := make([]byte, headerSize)
	le := binary.LittleEndian
	le.PutUint64(b[0:], r.ts)
	le.PutUint64(b[8:], r.cg)
	le.PutUint64(b[16:], r.mntns)
	le.PutUint64(b[24:], r.ino)
	le.PutUint32(b[32:], r.dev)
	le.PutUint32(b[36:], r.pid)
	le.PutUint32(b[40:], r.tid)
	le.PutUint32(b[44:], r.ppid)
	le.PutUint32(b[48:], r.uid)
	le.PutUint32(b[52:], r.gid)
	le.PutUint32(b[56:], r.euid)
	le.PutUint32(b[60:], uint32(r.ret))
	b[64] = r.typ
	le.PutUint16(b[66:], r.flags)
	le.PutUint16(b[68:], uint16(len(r.filename)))
	le.PutUint16(b[70:], uint16(len(r.interp)))
	le.PutUint16(b[72:], uint16(len(r.path)))
	le.PutUint16(b[74:], uint16(len(r.argv)))
	le.PutUint16(b[76:], r.argc)
	copy(b[80:96], r.comm)
	b = append(b, r.filename...)
	b = append(b, r.interp...)
	b = append(b, r.path...)
	return append(b, r.argv...)
}

func TestDecodeExec(t *testing.T) {
	boot := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	b := rec{
		typ: 1, flags: flagTTY | flagNSEnter, ts: 1500, cg: 77, mntns: 4026531841, ino: 1234,
		dev: 8<<20 | 1, pid: 10, tid: 11, ppid: 9, uid: 1000, gid: 1001, euid: 0, comm: "x.sh", argc: 3,
		filename: []byte("./x.sh\x00"), interp: []byte("/bin/sh\x00"), path: []byte("dash\x00bin\x00usr\x00"),
		argv: []byte("/bin/sh\x00./x.sh\x00a b\x00"),
	}.bytes()
	var ev Event
	if err := DecodeEvent(b, boot, &ev); err != nil {
		t.Fatal(err)
	}
	if ev.Type != EventExec || !ev.Time.Equal(boot.Add(1500)) || ev.CgroupID != 77 || ev.MntNS != 4026531841 ||
		ev.Ino != 1234 || ev.Dev != 0x801 || ev.PID != 10 || ev.TID != 11 || ev.PPID != 9 || ev.UID != 1000 ||
		ev.GID != 1001 || ev.EUID != 0 || ev.Comm != "x.sh" || ev.Argc != 3 || !ev.TTY || !ev.NSEnter ||
		ev.Killed || ev.Untracked || ev.ArgvTruncated {
		t.Errorf("decoded %+v", ev)
	}
	if ev.Filename != "./x.sh" || ev.Interpreter != "/bin/sh" || ev.Path != "/usr/bin/dash" {
		t.Errorf("filename %q interp %q path %q", ev.Filename, ev.Interpreter, ev.Path)
	}
	if want := []string{"/bin/sh", "./x.sh", "a b"}; !slices.Equal(ev.Argv, want) {
		t.Errorf("argv %q", ev.Argv)
	}
}

func TestDecodeFailedAndTruncation(t *testing.T) {
	argv := []byte{}
	for i := 0; i < 40; i++ {
		argv = append(argv, 'a', 0)
	}
	argv = append(argv, 'c', 'u', 't') // cut without NUL
	b := rec{typ: 2, ret: -2, flags: flagPathTruncated | flagExecveat, filename: []byte("/bin/sh\x00"), argv: argv}.bytes()
	var ev Event
	if err := DecodeEvent(b, time.Time{}, &ev); err != nil {
		t.Fatal(err)
	}
	if ev.Type != EventExecFailed || ev.Errno != 2 || !ev.Execveat || len(ev.Argv) != MaxArgs || !ev.ArgvTruncated {
		t.Errorf("decoded %+v", ev)
	}
	if ev.Path != "…" {
		t.Errorf("empty truncated path = %q", ev.Path)
	}
	// A cut last argument is kept.
	b = rec{typ: 2, ret: -13, argv: []byte("sh\x00-c\x00ech")}.bytes()
	if err := DecodeEvent(b, time.Time{}, &ev); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(ev.Argv, []string{"sh", "-c", "ech"}) || ev.Errno != 13 {
		t.Errorf("argv %q errno %d", ev.Argv, ev.Errno)
	}
}

func TestDecodeRejectsBadRecords(t *testing.T) {
	var ev Event
	if err := DecodeEvent(make([]byte, 10), time.Time{}, &ev); err == nil {
		t.Error("short header accepted")
	}
	b := rec{typ: 1, filename: []byte("/bin/true\x00")}.bytes()
	if err := DecodeEvent(b[:len(b)-3], time.Time{}, &ev); err == nil {
		t.Error("record shorter than its sections accepted")
	}
	b = rec{typ: 9}.bytes()
	if err := DecodeEvent(b, time.Time{}, &ev); err == nil {
		t.Error("unknown type accepted")
	}
}

func TestKernelDev(t *testing.T) {
	// major 259, minor 3 (nvme): kernel 259<<20|3, user space makedev(259, 3)
	if got := kernelDev(259<<20 | 3); got != 0x10303 {
		t.Errorf("kernelDev = %#x", got)
	}
}

func FuzzDecodeEvent(f *testing.F) {
	f.Add(rec{typ: 1, filename: []byte("/bin/sh\x00"), path: []byte("sh\x00bin\x00"), argv: []byte("sh\x00")}.bytes())
	f.Add(rec{typ: 2, ret: -2, argv: []byte("x")}.bytes())
	f.Add(rec{typ: 3}.bytes())
	f.Fuzz(func(t *testing.T, b []byte) {
		var ev Event
		if err := DecodeEvent(b, time.Time{}, &ev); err != nil {
			return
		}
		if len(ev.Argv) > MaxArgs {
			t.Fatalf("%d args", len(ev.Argv))
		}
	})
}

func TestRingSize(t *testing.T) {
	for in, want := range map[int]uint32{0: DefaultRingBufferBytes, 1: 4096, 4096: 4096, 5000: 8192, 1 << 20: 1 << 20} {
		if got := ringSize(in); got != want {
			t.Errorf("ringSize(%d) = %d, want %d", in, got, want)
		}
	}
}

func BenchmarkDecodeEvent(b *testing.B) {
	r := rec{typ: 1, filename: []byte("/usr/bin/python3\x00"), path: []byte("python3.11\x00bin\x00usr\x00"),
		argv: []byte("python3\x00-c\x00import os; os.system('id')\x00--flag\x00value\x00"), comm: "python3"}.bytes()
	b.SetBytes(int64(len(r)))
	b.ReportAllocs()
	var ev Event
	for b.Loop() {
		if err := DecodeEvent(r, time.Time{}, &ev); err != nil {
			b.Fatal(err)
		}
	}
}
