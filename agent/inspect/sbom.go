package inspect

import (
	"fmt"
	"io"
	"sort"

	cdx "github.com/CycloneDX/cyclonedx-go"

	"github.com/loupe-dev/loupe/internal/version"
)

// SBOM builds a CycloneDX BOM of the report's package inventory; the
// scanned image (or directory) is the metadata component.
func (r *Report) SBOM() *cdx.BOM {
	bom := cdx.NewBOM()
	name := r.Name
	if name == "" {
		name = "rootfs"
	}
	bom.Metadata = &cdx.Metadata{
		Component:  &cdx.Component{BOMRef: "target", Type: cdx.ComponentTypeContainer, Name: name},
		Tools:      &cdx.ToolsChoice{Components: &[]cdx.Component{{Type: cdx.ComponentTypeApplication, Name: "loupe", Version: version.Version}}},
		Properties: &[]cdx.Property{{Name: "loupe:image_profile", Value: r.Profile.Name}},
	}
	comps := make([]cdx.Component, 0, len(r.Packages))
	seen := map[string]bool{}
	for i, p := range r.Packages {
		ref := p.PURL
		if ref == "" || seen[ref] {
			ref = fmt.Sprintf("pkg-%d", i)
		}
		seen[ref] = true
		c := cdx.Component{BOMRef: ref, Type: cdx.ComponentTypeLibrary, Name: p.Name, Version: p.Version, PackageURL: p.PURL}
		switch p.Ecosystem {
		case "os":
			c.Type = cdx.ComponentTypeOS
		case "deb", "apk":
			c.Type = cdx.ComponentTypeApplication
		}
		if p.License != "" {
			c.Licenses = &cdx.Licenses{{License: &cdx.License{Name: p.License}}}
		}
		props := []cdx.Property{{Name: "loupe:ecosystem", Value: p.Ecosystem}}
		if p.Path != "" {
			props = append(props, cdx.Property{Name: "loupe:path", Value: printable(p.Path)})
		}
		c.Properties = &props
		comps = append(comps, c)
	}
	sort.SliceStable(comps, func(i, j int) bool { return comps[i].BOMRef < comps[j].BOMRef })
	bom.Components = &comps
	return bom
}

// WriteSBOM writes the CycloneDX JSON SBOM of the report to w.
func (r *Report) WriteSBOM(w io.Writer) error {
	enc := cdx.NewBOMEncoder(w, cdx.BOMFileFormatJSON)
	enc.SetPretty(true)
	if err := enc.Encode(r.SBOM()); err != nil {
		return fmt.Errorf("encode CycloneDX SBOM: %w", err)
	}
	return nil
}
