// Package rpcauth carries the cluster token on every gRPC call. Servers
// refuse a wrong or missing token with errcode.Unauthenticated before any
// handler runs; clients attach it with DialOption.
package rpcauth

import (
	"context"
	"crypto/subtle"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/emberfs/emberfs/internal/errcode"
)

// MetadataKey is the gRPC metadata key holding the cluster token.
const MetadataKey = "x-emberfs-token"

func check(ctx context.Context, token string) error {
	md, _ := metadata.FromIncomingContext(ctx)
	got := md.Get(MetadataKey)
	if len(got) == 0 || got[0] == "" {
		return errcode.ToGRPC(errcode.New(errcode.Unauthenticated, "missing cluster token"))
	}
	if subtle.ConstantTimeCompare([]byte(got[0]), []byte(token)) != 1 {
		return errcode.ToGRPC(errcode.New(errcode.Unauthenticated, "wrong cluster token"))
	}
	return nil
}

// ServerOptions returns interceptors that check the token on every unary and
// streaming call.
func ServerOptions(token string) []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			if err := check(ctx, token); err != nil {
				return nil, err
			}
			return h(ctx, req)
		}),
		grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			if err := check(ss.Context(), token); err != nil {
				return err
			}
			return h(srv, ss)
		}),
	}
}

type tokenCreds string

func (t tokenCreds) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{MetadataKey: string(t)}, nil
}

// The cluster runs on trusted networks without TLS (as 3FS does); the token
// guards against misdirected clients, not eavesdroppers.
func (tokenCreds) RequireTransportSecurity() bool { return false }

// DialOption attaches token to every call made on a connection.
func DialOption(token string) grpc.DialOption {
	return grpc.WithPerRPCCredentials(tokenCreds(token))
}
