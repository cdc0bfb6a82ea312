package rpcauth

import (
	"context"
	"net"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/emberfs/emberfs/internal/errcode"
)

// startServer runs a real gRPC server (the standard health service) that
// requires token.
func startServer(t *testing.T, token string) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(ServerOptions(token)...)
	healthpb.RegisterHealthServer(srv, health.NewServer())
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	return lis.Addr().String()
}

func call(t *testing.T, addr string, opts ...grpc.DialOption) error {
	t.Helper()
	opts = append(opts, grpc.WithTransportCredentials(insecure.NewCredentials()))
	conn, err := grpc.NewClient(addr, opts...)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_, err = healthpb.NewHealthClient(conn).Check(context.Background(), &healthpb.HealthCheckRequest{})
	return errcode.FromGRPC(err)
}

func TestTokenChecked(t *testing.T) {
	addr := startServer(t, "s3cret")
	if err := call(t, addr, DialOption("s3cret")); err != nil {
		t.Fatalf("right token refused: %v", err)
	}
	err := call(t, addr, DialOption("wrong"))
	if !errcode.Is(err, errcode.Unauthenticated) {
		t.Fatalf("wrong token: got %v, want Unauthenticated", err)
	}
	err = call(t, addr)
	if !errcode.Is(err, errcode.Unauthenticated) {
		t.Fatalf("missing token: got %v, want Unauthenticated", err)
	}
}
