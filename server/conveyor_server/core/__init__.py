"""Broker core: the task lifecycle and its policies, pure Python (no gRPC, LMDB or protobuf)."""
