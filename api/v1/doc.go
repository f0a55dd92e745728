// Package loupev1 is Loupe's wire API: the Finding message and the Collector
// gRPC service (generated from loupe.proto; run `make generate` after editing it).
package loupev1

//go:generate protoc -I . --go_out=. --go_opt=paths=source_relative --go-grpc_out=. --go-grpc_opt=paths=source_relative loupe.proto
