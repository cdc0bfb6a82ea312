package transport

// DataServer is the server end of a data transport as a service uses it:
// it registers handlers, advertises an address and stops. The TCP Server
// implements it; an RDMA server would implement it too.
type DataServer interface {
	Registrar
	Addr() string
	Close() error
}

var _ DataServer = (*Server)(nil)

// Factory makes both ends of a data transport for a service: the server
// that clients and chain predecessors call, and the caller it uses to
// forward writes and sync replicas. Services take one instead of building
// TCP ends themselves, so another transport (RDMA, which these machines
// cannot run) can carry client and chain traffic alike.
type Factory interface {
	Listen(cfg ServerConfig) (DataServer, error)
	NewCaller(cfg ClientConfig) Caller
}

// TCP is the default Factory: framed, multiplexed TCP (this package).
type TCP struct{}

// Listen starts a TCP data server.
func (TCP) Listen(cfg ServerConfig) (DataServer, error) {
	s, err := NewServer(cfg)
	if err != nil {
		return nil, err // an untyped nil: callers test the interface for nil
	}
	return s, nil
}

// NewCaller makes a TCP data client.
func (TCP) NewCaller(cfg ClientConfig) Caller { return NewClient(cfg) }
