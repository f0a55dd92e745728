//go:build !linux

package imagetar

import "errors"

// Limits bound what one image may unpack to.
type Limits struct {
	MaxBytes   int64
	MaxEntries int64
}

// Image describes an unpacked image.
type Image struct {
	Ref, Digest, User string
	UserKnown         bool
	Layers, Warnings  []string
	Rejected          int
}

// IsImageTar is not supported off Linux.
func IsImageTar(file string) bool { return false }

// Unpack needs openat2 (Linux).
func Unpack(file, dest, tmp string, lim Limits) (*Image, error) {
	return nil, errors.New("unpacking image tarballs needs Linux (openat2)")
}
