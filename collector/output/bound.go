package output

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	loupev1 "github.com/loupe-dev/loupe/api/v1"
)

// jsonOpts are the CLI's (`loupe query -o jsonl`): proto field names.
var jsonOpts = protojson.MarshalOptions{UseProtoNames: true}

// Size bounds of what is sent.
const (
	maxBodyBytes   = 1 << 20  // one webhook or falcosidekick request body
	maxSyslogBytes = 64 << 10 // one syslog message (RFC 5425 receivers must take 2048; most take 64 KiB)
)

// TruncatedDetail is the details key set on a finding whose strings or lists
// were cut to fit a message bound.
const TruncatedDetail = "output_truncated"

// errTooLarge is returned when even a shrunk finding does not fit.
var errTooLarge = errors.New("finding does not fit the message bound")

// findingJSON is the finding as `loupe query -o jsonl` prints it (the same
// field names), compacted: protojson varies its spacing on purpose.
func findingJSON(f *loupev1.Finding) ([]byte, error) {
	b, err := jsonOpts.Marshal(f)
	if err != nil {
		return nil, err
	}
	var out bytes.Buffer
	if err := json.Compact(&out, b); err != nil {
		return nil, err
	}
	return out.Bytes(), nil
}

// fit encodes f with enc within max bytes: as it is when it fits, else a copy
// with every string and list cut ever shorter (and TruncatedDetail set).
func fit(f *loupev1.Finding, max int, enc func(*loupev1.Finding) ([]byte, error)) ([]byte, error) {
	b, err := enc(f)
	if err != nil || len(b) <= max {
		return b, err
	}
	for _, lim := range []struct{ str, list int }{{4096, 256}, {1024, 64}, {256, 16}, {64, 4}} {
		g := proto.Clone(f).(*loupev1.Finding)
		shrink(g.ProtoReflect(), lim.str, lim.list)
		if g.Details == nil {
			g.Details = map[string]string{}
		}
		g.Details[TruncatedDetail] = "true"
		if b, err = enc(g); err != nil || len(b) <= max {
			return b, err
		}
	}
	return nil, fmt.Errorf("encode finding %s (%d bytes): %w", f.GetId(), len(b), errTooLarge)
}

// shrink cuts, in place, every string of m to maxStr bytes and every list
// and map to maxList entries, recursively.
func shrink(m protoreflect.Message, maxStr, maxList int) {
	var fields []protoreflect.FieldDescriptor
	m.Range(func(fd protoreflect.FieldDescriptor, _ protoreflect.Value) bool {
		fields = append(fields, fd)
		return true
	})
	for _, fd := range fields {
		v := m.Get(fd)
		switch {
		case fd.IsList():
			l := v.List()
			if l.Len() > maxList {
				l.Truncate(maxList)
			}
			for i := 0; i < l.Len(); i++ {
				switch fd.Kind() {
				case protoreflect.StringKind:
					l.Set(i, protoreflect.ValueOfString(cut(l.Get(i).String(), maxStr)))
				case protoreflect.MessageKind:
					shrink(l.Get(i).Message(), maxStr, maxList)
				}
			}
		case fd.IsMap():
			shrinkMap(v.Map(), fd, maxStr, maxList)
		case fd.Kind() == protoreflect.StringKind:
			m.Set(fd, protoreflect.ValueOfString(cut(v.String(), maxStr)))
		case fd.Kind() == protoreflect.MessageKind:
			shrink(v.Message(), maxStr, maxList)
		}
	}
}

func shrinkMap(mp protoreflect.Map, fd protoreflect.FieldDescriptor, maxStr, maxList int) {
	type kv struct {
		k protoreflect.MapKey
		v protoreflect.Value
	}
	var all []kv
	mp.Range(func(k protoreflect.MapKey, v protoreflect.Value) bool {
		all = append(all, kv{k, v})
		return true
	})
	slices.SortFunc(all, func(a, b kv) int { return strings.Compare(a.k.String(), b.k.String()) })
	for i, e := range all {
		mp.Clear(e.k)
		if i >= maxList {
			continue
		}
		k, v := e.k, e.v
		if fd.MapKey().Kind() == protoreflect.StringKind {
			k = protoreflect.ValueOfString(cut(k.String(), maxStr)).MapKey()
		}
		switch fd.MapValue().Kind() {
		case protoreflect.StringKind:
			v = protoreflect.ValueOfString(cut(v.String(), maxStr))
		case protoreflect.MessageKind:
			shrink(v.Message(), maxStr, maxList)
		}
		mp.Set(k, v)
	}
}

// cut returns s cut to at most n bytes, on a UTF-8 boundary.
func cut(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
