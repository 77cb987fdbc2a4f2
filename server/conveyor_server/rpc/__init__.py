"""gRPC servicers: request -> one engine call -> response. No business logic."""
