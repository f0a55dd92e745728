package pkgdb

import (
	"bytes"
	"testing"
)

func FuzzDpkgStatus(f *testing.F) {
	f.Add(hostDpkgExcerpt(f, 3))
	f.Add([]byte("Package: a\nStatus: install ok installed\nVersion: 1\n\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, p := range ParseDpkgStatus(b, "debian-12") {
			if p.Name == "" {
				t.Fatal("empty name")
			}
		}
	})
}

func FuzzApkInstalled(f *testing.F) {
	f.Add([]byte("P:musl\nV:1.2.4-r2\nA:x86_64\n\n"))
	f.Fuzz(func(t *testing.T, b []byte) { ParseApkInstalled(b, "") })
}

func FuzzOSRelease(f *testing.F) {
	f.Add([]byte("ID=debian\nVERSION_ID=\"12\"\nPRETTY_NAME='Distroless'\n"))
	f.Fuzz(func(t *testing.T, b []byte) { ParseOSRelease(b) })
}

func FuzzPythonMetadata(f *testing.F) {
	f.Add([]byte("Metadata-Version: 2.1\nName: requests\nVersion: 2.31.0\n"))
	f.Fuzz(func(t *testing.T, b []byte) { ParsePythonMetadata(b) })
}

func FuzzPackageJSON(f *testing.F) {
	f.Add([]byte(`{"name":"@a/b","version":"1.0.0","license":"MIT"}`))
	f.Fuzz(func(t *testing.T, b []byte) { ParsePackageJSON(b) })
}

func FuzzManifest(f *testing.F) {
	f.Add([]byte("Manifest-Version: 1.0\nImplementation-Title: x\n continued\n"))
	f.Fuzz(func(t *testing.T, b []byte) { ParseManifest(b) })
}

func FuzzPomProperties(f *testing.F) {
	f.Add([]byte("groupId=g\nartifactId=a\nversion=1\n"))
	f.Fuzz(func(t *testing.T, b []byte) { ParsePomProperties(b) })
}

func FuzzJar(f *testing.F) {
	f.Add(jar(f, map[string][]byte{"META-INF/maven/g/a/pom.properties": []byte("groupId=g\nartifactId=a\nversion=1\n")}))
	f.Fuzz(func(t *testing.T, b []byte) { ScanJar(bytes.NewReader(b), int64(len(b)), "/f.jar") })
}

func FuzzGoBinary(f *testing.F) {
	f.Add([]byte("\x7fELF\x02\x01\x01\x00"))
	f.Fuzz(func(t *testing.T, b []byte) { GoBinary(bytes.NewReader(b), "/x") })
}
