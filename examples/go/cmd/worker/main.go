// Command worker runs Conveyor tasks, on unary Lease/Ack or on StreamWork.
//
//	worker -queue images [-queue more] [-stream] [-slots 8] [-lease-seconds 30] [-count N] [-no-extend]
//
// It follows the worker loop docs/protocol.md recommends: lease only for idle slots,
// extend leases well before they run out, send acks in batches, and on SIGTERM/SIGINT
// stop leasing, give back (Release) what has not started and let running tasks finish.
//
// The handler echoes its JSON payload. Two payload fields make it misbehave on purpose:
// "sleep_ms" (work that long) and "fail" (report a failed attempt with that message).
// Prints one JSON line per event: ready, leased, acked, failed, rejected (a stale lease:
// FAILED_PRECONDITION), released, stopping. -count N exits after N outcomes;
// -no-extend never extends leases (a worker that stalls).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	conveyorv1 "conveyor.dev/go/conveyor/v1"
	"conveyor.dev/go/internal/broker"
)

// ackBatch is how long finished tasks wait for others to share one Ack/Fail call.
const ackBatch = 5 * time.Millisecond

type queues []string

func (q *queues) String() string     { return strings.Join(*q, ",") }
func (q *queues) Set(v string) error { *q = append(*q, v); return nil }

var (
	queueFlag    queues
	stream       = flag.Bool("stream", false, "use StreamWork instead of unary Lease/Ack")
	slots        = flag.Int("slots", 4, "tasks run at once")
	leaseSeconds = flag.Float64("lease-seconds", 30, "lease length asked for")
	count        = flag.Int("count", 0, "exit after this many outcomes (0: run until stopped)")
	noExtend     = flag.Bool("no-extend", false, "never extend leases (a worker that stalls)")
	workerID     = flag.String("worker-id", fmt.Sprintf("go-%d", os.Getpid()), "worker identity")
)

var stdout = struct {
	sync.Mutex
	*json.Encoder
}{Encoder: json.NewEncoder(os.Stdout)}

func emit(event string, fields map[string]interface{}) {
	line := map[string]interface{}{"event": event}
	for k, v := range fields {
		line[k] = v
	}
	stdout.Lock()
	defer stdout.Unlock()
	_ = stdout.Encode(line)
}

// handle is the user's code: it returns the result value, or an error to fail the attempt.
func handle(task *conveyorv1.Task) (interface{}, error) {
	value, err := broker.Decode(task.Payload, task.ContentType)
	if err != nil {
		return nil, err
	}
	payload, _ := value.(map[string]interface{})
	if ms, ok := payload["sleep_ms"].(float64); ok {
		time.Sleep(time.Duration(ms) * time.Millisecond)
	}
	if message, ok := payload["fail"].(string); ok {
		return nil, errors.New(message)
	}
	return map[string]interface{}{"echo": value, "kind": task.Kind, "attempt": task.Attempt, "worker": "go"}, nil
}

// outcome is a finished task: an ack or a failure, ready to send.
type outcome struct {
	ack     *conveyorv1.AckItem
	failure *conveyorv1.FailItem
}

func outcomeOf(task *conveyorv1.Task, result interface{}, err error) outcome {
	lease := &conveyorv1.LeaseRef{TaskId: task.Id, LeaseToken: task.LeaseToken}
	if err != nil {
		return outcome{failure: &conveyorv1.FailItem{Lease: lease,
			Error: &conveyorv1.TaskError{Type: fmt.Sprintf("%T", err), Message: err.Error()}}}
	}
	data, err := json.Marshal(result)
	if err != nil {
		return outcome{failure: &conveyorv1.FailItem{Lease: lease,
			Error: &conveyorv1.TaskError{Type: "EncodeError", Message: err.Error()}}}
	}
	return outcome{ack: &conveyorv1.AckItem{Lease: lease,
		Result: &conveyorv1.TaskResult{Data: data, ContentType: broker.JSON}}}
}

// state is the book-keeping both transports share: slots, leases held, --count, stop.
type state struct {
	mu       sync.Mutex
	leases   map[string]string // task id -> lease token, for extension and release
	done     int
	stopping bool
	stopped  chan struct{} // closed when a stop begins
	idle     chan struct{} // closed when stopping and nothing is held
	freed    chan struct{} // a slot came free
	finished chan outcome  // handlers' outcomes, batched by the sender
}

func newState() *state {
	return &state{leases: map[string]string{}, stopped: make(chan struct{}), idle: make(chan struct{}),
		freed: make(chan struct{}, 1), finished: make(chan outcome, *slots)}
}

func (s *state) free() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopping {
		return 0
	}
	return *slots - len(s.leases)
}

func (s *state) isStopping() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stopping
}

// stop: lease nothing more; running tasks finish and are acked.
func (s *state) stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stopLocked()
}

func (s *state) stopLocked() {
	if s.stopping {
		return
	}
	s.stopping = true
	emit("stopping", map[string]interface{}{"running": len(s.leases)})
	close(s.stopped)
	if len(s.leases) == 0 {
		close(s.idle)
	}
}

func (s *state) start(task *conveyorv1.Task) {
	s.mu.Lock()
	s.leases[task.Id] = task.LeaseToken
	s.mu.Unlock()
	emit("leased", map[string]interface{}{"id": task.Id, "attempt": task.Attempt})
	go func() {
		result, err := handle(task)
		s.finished <- outcomeOf(task, result, err)
	}()
}

// settled records the broker's answer for one outcome sent.
func (s *state) settled(o *conveyorv1.ItemOutcome, event string) {
	fields := map[string]interface{}{"id": o.TaskId}
	if o.Code != 0 {
		event = "rejected"
		fields["code"], fields["message"] = o.Code, o.Message
	}
	emit(event, fields)
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.leases, o.TaskId)
	s.done++
	select {
	case s.freed <- struct{}{}:
	default:
	}
	if *count > 0 && s.done >= *count {
		s.stopLocked()
	} else if s.stopping && len(s.leases) == 0 {
		close(s.idle)
	}
}

func (s *state) extensions() []*conveyorv1.LeaseExtension {
	s.mu.Lock()
	defer s.mu.Unlock()
	items := make([]*conveyorv1.LeaseExtension, 0, len(s.leases))
	for id, token := range s.leases {
		items = append(items, &conveyorv1.LeaseExtension{
			Lease: &conveyorv1.LeaseRef{TaskId: id, LeaseToken: token}, LeaseDuration: broker.Seconds(*leaseSeconds)})
	}
	return items
}

// heartbeat extends every held lease at a third of its length, so two beats can fail first.
func (s *state) heartbeat(extend func([]*conveyorv1.LeaseExtension) error) {
	if *noExtend {
		return
	}
	ticker := time.NewTicker(time.Duration(*leaseSeconds / 3 * float64(time.Second)))
	defer ticker.Stop()
	for {
		select {
		case <-s.idle:
			return
		case <-ticker.C:
			if items := s.extensions(); len(items) > 0 {
				if err := extend(items); err != nil {
					emit("extend_failed", map[string]interface{}{"message": err.Error()})
				}
			}
		}
	}
}

// batch collects the outcomes that finish within ackBatch of the first one.
func (s *state) batch(first outcome) (acks []*conveyorv1.AckItem, failures []*conveyorv1.FailItem) {
	add := func(o outcome) {
		if o.ack != nil {
			acks = append(acks, o.ack)
		} else {
			failures = append(failures, o.failure)
		}
	}
	add(first)
	timer := time.NewTimer(ackBatch)
	defer timer.Stop()
	for {
		select {
		case o := <-s.finished:
			add(o)
		case <-timer.C:
			return acks, failures
		}
	}
}

func call() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 10*time.Second)
}

// ---- unary: Lease, ExtendLease, Ack, Fail, Release ------------------------------------

func runUnary(c *broker.Clients, s *state) error {
	go s.heartbeat(func(items []*conveyorv1.LeaseExtension) error {
		ctx, cancel := call()
		defer cancel()
		answer, err := c.Workers.ExtendLease(ctx, &conveyorv1.ExtendLeaseRequest{Leases: items})
		if err != nil {
			return err
		}
		for _, r := range answer.Results {
			if r.CancelRequested {
				emit("cancel_requested", map[string]interface{}{"id": r.Outcome.TaskId})
			}
		}
		return nil
	})
	sent := make(chan error, 1)
	go func() { sent <- sendUnary(c, s) }()

	emit("ready", map[string]interface{}{"transport": "unary"})
	for !s.isStopping() {
		free := s.free()
		if free == 0 {
			select { // every slot busy: lease nothing
			case <-s.freed:
			case <-s.stopped:
			}
			continue
		}
		// A stop cancels the parked Lease; tasks the broker picked for it are released.
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		go func() {
			select {
			case <-s.stopped:
				cancel()
			case <-ctx.Done():
			}
		}()
		answer, err := c.Workers.Lease(ctx, &conveyorv1.LeaseRequest{
			Queues:        queueFlag,
			MaxTasks:      uint32(free), // only as many as there are idle slots
			LeaseDuration: broker.Seconds(*leaseSeconds),
			Wait:          broker.Seconds(5), // long poll; an empty answer is normal
			WorkerId:      *workerID,
		})
		cancel()
		if status.Code(err) == codes.Canceled && s.isStopping() {
			break
		}
		if err != nil {
			return err
		}
		if s.isStopping() { // a stop began while the tasks were on their way: give them back
			return release(c, answer.Tasks)
		}
		for _, task := range answer.Tasks {
			s.start(task)
		}
	}
	select {
	case <-s.idle:
		return nil
	case err := <-sent:
		return err
	}
}

// sendUnary sends the handlers' outcomes in batches, one Ack and one Fail call each.
func sendUnary(c *broker.Clients, s *state) error {
	for first := range s.finished {
		acks, failures := s.batch(first)
		if len(acks) > 0 {
			ctx, cancel := call()
			answer, err := c.Workers.Ack(ctx, &conveyorv1.AckRequest{Acks: acks})
			cancel()
			if err := settle(s, err, answer.GetOutcomes(), acks[0].Lease, len(acks), "acked"); err != nil {
				return err
			}
		}
		if len(failures) > 0 {
			ctx, cancel := call()
			answer, err := c.Workers.Fail(ctx, &conveyorv1.FailRequest{Failures: failures})
			cancel()
			if err := settle(s, err, answer.GetOutcomes(), failures[0].Lease, len(failures), "failed"); err != nil {
				return err
			}
		}
	}
	return nil
}

// settle records a batch's outcomes. One item that fails fails the whole call with its
// status (docs/protocol.md), so a lone stale lease arrives as FAILED_PRECONDITION.
func settle(s *state, err error, outcomes []*conveyorv1.ItemOutcome, first *conveyorv1.LeaseRef, n int, event string) error {
	if err != nil {
		if n != 1 {
			return err
		}
		st := status.Convert(err)
		outcomes = []*conveyorv1.ItemOutcome{{TaskId: first.TaskId, Code: uint32(st.Code()), Message: st.Message()}}
	}
	for _, o := range outcomes {
		s.settled(o, event)
	}
	return nil
}

// release gives tasks back: READY again at once, the attempt not used up.
func release(c *broker.Clients, tasks []*conveyorv1.Task) error {
	if len(tasks) == 0 {
		return nil
	}
	leases := make([]*conveyorv1.LeaseRef, len(tasks))
	for i, t := range tasks {
		leases[i] = &conveyorv1.LeaseRef{TaskId: t.Id, LeaseToken: t.LeaseToken}
	}
	ctx, cancel := call()
	defer cancel()
	if _, err := c.Workers.Release(ctx, &conveyorv1.ReleaseRequest{Leases: leases}); err != nil {
		return err
	}
	for _, t := range tasks {
		emit("released", map[string]interface{}{"id": t.Id})
	}
	return nil
}

// ---- StreamWork: credits out, tasks in, outcomes on the same stream -------------------

func runStream(c *broker.Clients, s *state) error {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	work, err := c.Workers.StreamWork(ctx)
	if err != nil {
		return err
	}
	// One goroutine sends (gRPC-Go streams allow one sender at a time): the opening,
	// batched outcomes with the credits their slots free, extensions, and the half-close.
	requests := make(chan *conveyorv1.StreamWorkRequest, 16)
	go func() {
		for first := range s.finished {
			acks, failures := s.batch(first)
			credits := uint32(len(acks) + len(failures))
			if s.isStopping() {
				credits = 0 // no new tasks for a worker that is leaving
			}
			requests <- &conveyorv1.StreamWorkRequest{Acks: acks, Failures: failures, Credits: credits}
		}
	}()
	go s.heartbeat(func(items []*conveyorv1.LeaseExtension) error {
		requests <- &conveyorv1.StreamWorkRequest{Extensions: items}
		return nil
	})
	sendErr := make(chan error, 1)
	go func() {
		sendErr <- func() error {
			for {
				select {
				case r := <-requests:
					if err := work.Send(r); err != nil {
						return err
					}
				case <-s.idle: // nothing held: half-close; the broker sends what is left, then ends
					for len(requests) > 0 {
						if err := work.Send(<-requests); err != nil {
							return err
						}
					}
					return work.CloseSend()
				}
			}
		}()
	}()
	requests <- &conveyorv1.StreamWorkRequest{
		Open: &conveyorv1.StreamWorkOpen{Queues: queueFlag, LeaseDuration: broker.Seconds(*leaseSeconds),
			WorkerId: *workerID},
		Credits: uint32(*slots), // one credit per idle slot
	}
	emit("ready", map[string]interface{}{"transport": "stream"})
	var late sync.WaitGroup // releases of tasks that arrived after a stop began
	defer late.Wait()
	for {
		response, err := work.Recv()
		if err == io.EOF {
			return <-sendErr
		}
		if err != nil {
			return err
		}
		if s.isStopping() {
			late.Add(1)
			go func(tasks []*conveyorv1.Task) {
				defer late.Done()
				if err := release(c, tasks); err != nil {
					emit("release_failed", map[string]interface{}{"message": err.Error()})
				}
			}(response.Tasks)
		} else {
			for _, task := range response.Tasks {
				s.start(task)
			}
		}
		for _, o := range response.AckOutcomes {
			s.settled(o, "acked")
		}
		for _, o := range response.FailOutcomes {
			s.settled(o, "failed")
		}
		for _, r := range response.ExtensionResults {
			if r.CancelRequested {
				emit("cancel_requested", map[string]interface{}{"id": r.Outcome.TaskId})
			}
		}
	}
}

func main() {
	flag.Var(&queueFlag, "queue", `queue to lease from (repeatable; empty means "default")`)
	flag.Parse()
	if len(queueFlag) == 0 {
		queueFlag = queues{""}
	}
	clients, err := broker.Dial()
	if err != nil {
		fatal(err)
	}
	defer clients.Conn.Close()
	s := newState()
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-signals
		s.stop()
	}()
	if *stream {
		err = runStream(clients, s)
	} else {
		err = runUnary(clients, s)
	}
	if err != nil {
		fatal(err)
	}
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "worker:", err)
	os.Exit(1)
}
