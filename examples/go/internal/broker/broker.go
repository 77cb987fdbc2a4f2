// Package broker connects to a Conveyor broker and holds what the producer and the
// worker share: the connection, the bearer token, durations and payload decoding.
//
// Settings come from the environment, as for `conveyor serve`:
//
//	CONVEYOR_ADDRESS  broker address (default 127.0.0.1:7470)
//	CONVEYOR_TOKEN    sends `authorization: Bearer <token>` on every call
//	CONVEYOR_TLS_CA   a PEM file: connect with TLS and trust this CA (else plaintext)
package broker

import (
	"context"
	"encoding/json"
	"mime"
	"os"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/durationpb"

	conveyorv1 "conveyor.dev/go/conveyor/v1"
)

// JSON is the content type both examples write and every Conveyor SDK decodes.
const JSON = "application/json"

// Clients are the two services a producer and a worker use, on one connection.
type Clients struct {
	Conn    *grpc.ClientConn
	Tasks   conveyorv1.TaskServiceClient
	Workers conveyorv1.WorkerServiceClient
}

// Dial connects (lazily: the first call waits for the connection).
func Dial() (*Clients, error) {
	address := os.Getenv("CONVEYOR_ADDRESS")
	if address == "" {
		address = "127.0.0.1:7470"
	}
	// grpc.WithInsecure is deprecated in newer gRPC-Go in favour of
	// credentials/insecure, which the gRPC-Go 1.33 of Debian 12 does not have yet.
	transport := grpc.WithInsecure()
	if ca := os.Getenv("CONVEYOR_TLS_CA"); ca != "" {
		creds, err := credentials.NewClientTLSFromFile(ca, "")
		if err != nil {
			return nil, err
		}
		transport = grpc.WithTransportCredentials(creds)
	}
	options := []grpc.DialOption{transport}
	if token := os.Getenv("CONVEYOR_TOKEN"); token != "" {
		// Plain metadata rather than PerRPCCredentials: those demand TLS, and a broker on
		// loopback may run plaintext with a token.
		options = append(options,
			grpc.WithUnaryInterceptor(func(ctx context.Context, method string, req, reply interface{},
				cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
				return invoker(withToken(ctx, token), method, req, reply, cc, opts...)
			}),
			grpc.WithStreamInterceptor(func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn,
				method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
				return streamer(withToken(ctx, token), desc, cc, method, opts...)
			}))
	}
	conn, err := grpc.Dial(address, options...)
	if err != nil {
		return nil, err
	}
	return &Clients{conn, conveyorv1.NewTaskServiceClient(conn), conveyorv1.NewWorkerServiceClient(conn)}, nil
}

func withToken(ctx context.Context, token string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
}

// Seconds is a google.protobuf.Duration.
func Seconds(s float64) *durationpb.Duration {
	return durationpb.New(time.Duration(s * float64(time.Second)))
}

// IsJSON says whether a content type is JSON (application/json or any +json type),
// ignoring case and parameters, as the Python SDK does.
func IsJSON(contentType string) bool {
	media, _, err := mime.ParseMediaType(contentType)
	if err != nil {
		media = strings.ToLower(strings.TrimSpace(strings.SplitN(contentType, ";", 2)[0]))
	}
	return media == JSON || strings.HasSuffix(media, "+json")
}

// Decode reads payload or result bytes by their content type: JSON values, text as a
// string, anything else as the raw bytes.
func Decode(data []byte, contentType string) (interface{}, error) {
	switch {
	case IsJSON(contentType):
		if len(data) == 0 {
			return nil, nil
		}
		var value interface{}
		err := json.Unmarshal(data, &value)
		return value, err
	case strings.HasPrefix(strings.ToLower(contentType), "text/"):
		return string(data), nil
	default:
		return data, nil
	}
}
