// Command etcd is the etcd server, built from the Go module proxy for
// EmberFS's tests and deployments: `go install` of go.etcd.io/etcd/server/v3
// is refused because that module has replace directives, but a module of our
// own whose main calls etcdmain.Main builds. scripts/build-etcd.sh builds it.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
