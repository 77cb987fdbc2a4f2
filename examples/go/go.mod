module conveyor.dev/go

// The code uses only APIs present from gRPC-Go 1.33 (Debian 12's, which CI builds
// against in GOPATH mode) to current releases; these are the newest versions that
// still build with Go 1.19. `go mod tidy` writes go.sum (see README.md).
go 1.19

require (
	google.golang.org/grpc v1.58.3
	google.golang.org/protobuf v1.31.0
)
