// Command producer enqueues Conveyor tasks and, with -result, waits for their results.
//
//	producer -queue images -kind thumbnails.make -payload '{"path": "a.png"}' [-count 3] [-result 10]
//
// Prints one JSON line per task: id and state, and with -result the final state, the
// result decoded by its content type, and last_error.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"math"
	"os"
	"time"

	conveyorv1 "conveyor.dev/go/conveyor/v1"
	"conveyor.dev/go/internal/broker"
)

func main() {
	queue := flag.String("queue", "", `queue name; empty means the "default" queue`)
	kind := flag.String("kind", "example.echo", "task kind")
	payload := flag.String("payload", "{}", "JSON payload")
	count := flag.Int("count", 1, "how many tasks")
	priority := flag.Int("priority", 0, "priority, -100..100")
	result := flag.Float64("result", -1, "seconds to wait for each result (negative: do not wait)")
	flag.Parse()
	if !json.Valid([]byte(*payload)) {
		fail(fmt.Errorf("-payload is not JSON: %q", *payload))
	}
	clients, err := broker.Dial()
	if err != nil {
		fail(err)
	}
	defer clients.Conn.Close()

	specs := make([]*conveyorv1.TaskSpec, *count)
	for i := range specs {
		specs[i] = &conveyorv1.TaskSpec{
			Queue:       *queue,
			Kind:        *kind,
			Payload:     []byte(*payload),
			ContentType: broker.JSON, // tells workers in every language how to read the bytes
			Priority:    int32(*priority),
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var created []*conveyorv1.Task
	if len(specs) == 1 {
		answer, err := clients.Tasks.Enqueue(ctx, &conveyorv1.EnqueueRequest{Task: specs[0]})
		if err != nil {
			fail(err)
		}
		created = append(created, answer.Task)
	} else { // EnqueueBatch: all tasks in one transaction
		answer, err := clients.Tasks.EnqueueBatch(ctx, &conveyorv1.EnqueueBatchRequest{Tasks: specs})
		if err != nil {
			fail(err)
		}
		for _, r := range answer.Results {
			created = append(created, r.Task)
		}
	}
	out := json.NewEncoder(os.Stdout)
	for _, task := range created {
		if *result < 0 {
			_ = out.Encode(map[string]interface{}{"id": task.Id, "state": task.State.String()})
			continue
		}
		line, err := waitForResult(clients, task.Id, *result)
		if err != nil {
			fail(err)
		}
		_ = out.Encode(line)
	}
}

// waitForResult long-polls GetResult in pieces of at most 30 s (the broker cuts waits
// at 60 s), each with a deadline a little longer than its wait.
func waitForResult(clients *broker.Clients, id string, seconds float64) (map[string]interface{}, error) {
	end := time.Now().Add(time.Duration(seconds * float64(time.Second)))
	for {
		left := math.Max(0, time.Until(end).Seconds())
		wait := math.Min(left, 30)
		ctx, cancel := context.WithTimeout(context.Background(), time.Duration((wait+5)*float64(time.Second)))
		answer, err := clients.Tasks.GetResult(ctx, &conveyorv1.GetResultRequest{TaskId: id, Wait: broker.Seconds(wait)})
		cancel()
		if err != nil {
			return nil, err
		}
		if !answer.IsFinal && left > 0 {
			continue
		}
		task := answer.Task
		line := map[string]interface{}{"id": id, "state": task.State.String(), "is_final": answer.IsFinal,
			"content_type": task.GetResult().GetContentType(), "result": nil,
			"last_error": task.GetLastError().GetMessage()}
		if task.Result != nil {
			value, err := broker.Decode(task.Result.Data, task.Result.ContentType)
			if err != nil {
				return nil, err
			}
			line["result"] = value
		}
		return line, nil
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "producer:", err)
	os.Exit(1)
}
