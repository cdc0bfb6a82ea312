package mgmtdclient

import (
	"context"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/emberfs/emberfs/internal/rpcauth"
	"github.com/emberfs/emberfs/service/proto/mgmtdpb"
)

// routingServer answers GetRoutingInfo with a fixed version, like a
// primary.
type routingServer struct {
	mgmtdpb.UnimplementedMgmtdServer
}

func (routingServer) GetRoutingInfo(context.Context, *mgmtdpb.GetRoutingInfoReq) (*mgmtdpb.GetRoutingInfoRsp, error) {
	return &mgmtdpb.GetRoutingInfoRsp{Info: &mgmtdpb.RoutingInfo{Version: 7}}, nil
}

// TestCallMovesOnFromSilentInstance: an mgmtd cut off by the network takes
// a call's whole deadline without an error of its own (no RST). The next
// call must go to another instance, or a client whose believed primary was
// partitioned away would never find the new one (tests/netns).
func TestCallMovesOnFromSilentInstance(t *testing.T) {
	// A listener that accepts and never speaks: the cut-off instance.
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	go func() {
		var held []net.Conn
		defer func() {
			for _, c := range held {
				c.Close()
			}
		}()
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			held = append(held, c)
		}
	}()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(rpcauth.ServerOptions("tok")...)
	mgmtdpb.RegisterMgmtdServer(srv, routingServer{})
	go srv.Serve(lis) //nolint:errcheck // ends with Stop
	defer srv.Stop()

	conn, err := Dial([]string{silent.Addr().String(), lis.Addr().String()}, "tok")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	call := func(d time.Duration) (uint64, error) {
		ctx, cancel := context.WithTimeout(context.Background(), d)
		defer cancel()
		var v uint64
		err := conn.Call(ctx, func(ctx context.Context, cl mgmtdpb.MgmtdClient) error {
			rsp, err := cl.GetRoutingInfo(ctx, &mgmtdpb.GetRoutingInfoReq{})
			v = rsp.GetInfo().GetVersion()
			return err
		})
		return v, err
	}
	if _, err := call(300 * time.Millisecond); err == nil {
		t.Fatal("a call to the silent instance succeeded")
	}
	v, err := call(10 * time.Second) // below gRPC's 20 s connect timeout, which would also move on
	if err != nil || v != 7 {
		t.Fatalf("the call after a timeout went nowhere: version %d, %v (current instance %s)", v, err, conn.Current())
	}
}
