package fuse

import (
	"context"

	"github.com/emberfs/emberfs/client"
	"github.com/emberfs/emberfs/service/meta"
)

// ClientBackend adapts the native client to Backend.
func ClientBackend(c *client.Client) Backend { return clientBackend{c} }

type clientBackend struct{ c *client.Client }

func (b clientBackend) Meta() meta.FS { return b.c.Meta() }

func (b clientBackend) ClientID() string { return b.c.ID() }

func (b clientBackend) Open(ctx context.Context, u meta.User, p meta.PathAt, flags int, mode uint32) (File, error) {
	f, err := b.c.Open(ctx, u, p, flags, mode)
	if err != nil {
		return nil, err
	}
	return f, nil
}
