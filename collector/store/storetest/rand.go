package storetest

import "math/rand/v2"

func newRand(seed uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)) }

// NewRand returns a deterministic random source for Realistic.
func NewRand(seed uint64) *rand.Rand { return newRand(seed) }
