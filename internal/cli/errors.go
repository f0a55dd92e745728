package cli

import (
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// rpcError turns a gRPC error into a message that says what to do.
func rpcError(addr, what string, err error) error {
	st, ok := status.FromError(err)
	if !ok {
		return fmt.Errorf("%s: %w", what, err)
	}
	switch st.Code() {
	case codes.Unavailable:
		return fmt.Errorf("cannot reach collector at %s: %s — is loupe-collector running, and do --insecure/--ca match its TLS settings?", addr, st.Message())
	case codes.Unauthenticated, codes.PermissionDenied:
		return fmt.Errorf("collector at %s refused the %s: %s — check --tls-cert/--tls-key (mTLS) and the certificate's name", addr, what, st.Message())
	case codes.DeadlineExceeded:
		return fmt.Errorf("%s: collector at %s did not answer in time: %s", what, addr, st.Message())
	case codes.InvalidArgument:
		return fmt.Errorf("%s: %s", what, st.Message())
	}
	return fmt.Errorf("%s at %s: %s (%s)", what, addr, st.Message(), st.Code())
}
