module conveyor.dev/go

// The code builds with Go 1.19 and with gRPC-Go from 1.33 (what Debian 12 packages,
// which the project's CI builds against in GOPATH mode) to current releases.
go 1.19

require (
	google.golang.org/grpc v1.58.3
	google.golang.org/protobuf v1.31.0
)
