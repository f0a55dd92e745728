package inspect

import (
	"fmt"

	loupev1 "github.com/loupe-dev/loupe/api/v1"
)

// below finds what lower layers (bottom first) show at p: its type and, if
// it is a kept entry, the entry. exists=false when no lower layer has it.
func below(lower []*layerView, lowerMerged map[string]visible, p string) (exists bool, v *visible) {
	for i := len(lower) - 1; i >= 0; i-- {
		l := lower[i]
		typ, ok := l.fs.Lookup(p)
		if ok {
			if typ == TypeWhiteout || typ == 0 {
				return false, nil
			}
			if mv, ok := lowerMerged[p]; ok {
				return true, &mv
			}
			return true, nil
		}
		if l.hides(p) { // an opaque ancestor in this layer
			return false, nil
		}
	}
	return false, nil
}

// drift classifies every upper-dir entry as added, modified or deleted and
// reports executables (ELF, scripts, shared objects, exec bits) as DRIFT_FILE.
func (d *detector) drift(lower []*layerView, up *layerView) DriftSummary {
	var sum DriftSummary
	lowerMerged := merge(lower)
	for k := range up.res.Entries {
		e := &up.res.Entries[k]
		exists, lv := below(lower, lowerMerged, e.Path)
		change := "added"
		switch {
		case e.Type == TypeWhiteout:
			if !exists {
				continue // a whiteout over nothing
			}
			change = "deleted"
			sum.Deleted++
		case e.Type == TypeDir:
			if exists {
				continue // a copied-up parent directory
			}
			sum.Added++
		case exists:
			change = "modified"
			sum.Modified++
		default:
			sum.Added++
		}
		v := visible{e: e, layer: UpperLayer}
		switch change {
		case "deleted":
			if lv == nil || !lv.e.Executable() {
				continue
			}
			f := fileOf(e.Path, *lv)
			f.Layer, f.Change = UpperLayer, change
			d.add(loupev1.Kind_KIND_DRIFT_FILE, loupev1.Severity_SEVERITY_LOW, "inspect.drift_file",
				fmt.Sprintf("executable %s from layer %s deleted at runtime", printable(e.Path), lv.layer), f,
				map[string]string{"change": change, "lower_layer": lv.layer})
		default:
			if !e.Executable() && !(e.Type == TypeSymlink && lv != nil && lv.e.Executable()) {
				continue
			}
			f := fileOf(e.Path, v)
			f.Change = change
			details := map[string]string{"change": change}
			sev := loupev1.Severity_SEVERITY_HIGH
			what := "executable"
			if e.Class == "script" {
				what = "script"
			}
			if lv != nil {
				details["lower_layer"] = lv.layer
				if lv.e.SHA256 != "" && lv.e.SHA256 == e.SHA256 {
					details["content_unchanged"] = "true"
					sev = loupev1.Severity_SEVERITY_LOW
				}
			}
			d.add(loupev1.Kind_KIND_DRIFT_FILE, sev, "inspect.drift_file",
				fmt.Sprintf("%s %s %s at runtime (sha256 %s)", what, printable(e.Path), change, short(e.SHA256)), f, details)
		}
	}
	return sum
}

func short(h string) string {
	if len(h) > 12 {
		return h[:12]
	}
	if h == "" {
		return "-"
	}
	return h
}
