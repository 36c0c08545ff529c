package outbox

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/gatehouse/gatehouse/internal/testenv"
)

func msg(i int) Message {
	return Message{Topic: "t", Key: []byte("k"), Value: []byte(strconv.Itoa(i))}
}

func TestSpoolKeepsOrderAcrossSegmentsAndReopen(t *testing.T) {
	dir := t.TempDir()
	sp, err := openSpool(dir, 1<<20, 200) // tiny segments: many rolls
	if err != nil {
		t.Fatal(err)
	}
	var in []Message
	for i := 0; i < 100; i++ {
		in = append(in, msg(i))
	}
	if n, err := sp.append(in); n != 100 || err != nil {
		t.Fatalf("append = %d, %v", n, err)
	}
	// Consume 30, then reopen as a restarted process would.
	got := readN(t, sp, 30)
	sp.close()
	sp, err = openSpool(dir, 1<<20, 200)
	if err != nil {
		t.Fatal(err)
	}
	got = append(got, readN(t, sp, 1000)...)
	if len(got) != 100 {
		t.Fatalf("read %d messages, want 100", len(got))
	}
	for i, m := range got {
		if string(m.Value) != strconv.Itoa(i) {
			t.Fatalf("message %d = %s: order lost", i, m.Value)
		}
	}
	if !sp.empty() {
		t.Fatalf("spool not empty after draining: %d bytes", sp.Bytes())
	}
}

// A small live segment is kept after it is fully sent (write-through mode
// drains it on every send); what was sent is never read again, also after
// a restart.
func TestSpoolSentRecordsStaySentAcrossReopen(t *testing.T) {
	dir := t.TempDir()
	sp, err := openSpool(dir, 1<<20, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	var in []Message
	for i := range 15 {
		in = append(in, msg(i))
	}
	sp.append(in[:10])
	if got := readN(t, sp, 100); len(got) != 10 {
		t.Fatalf("read %d, want 10", len(got))
	}
	sp.append(in[10:])
	sp.close()
	sp, err = openSpool(dir, 1<<20, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	got := readN(t, sp, 100)
	if len(got) != 5 || string(got[0].Value) != "10" || string(got[4].Value) != "14" {
		t.Fatalf("after reopen read %v; want only messages 10..14", got)
	}
}

// The cursor is written before a sent segment is deleted. A crash in
// between leaves the segment behind; the next start deletes it instead of
// sending it again, and never reuses its number for new records.
func TestSpoolDeletesSegmentsTheCursorPassed(t *testing.T) {
	dir := t.TempDir()
	sp, _ := openSpool(dir, 1<<20, 1<<20)
	sp.append([]Message{msg(1), msg(2)})
	sp.close()
	cursor := fmt.Appendf(nil, "%20d %20d\n", 2, 0) // "segment 1 was sent"
	if err := os.WriteFile(filepath.Join(dir, cursorFile), cursor, 0o600); err != nil {
		t.Fatal(err)
	}
	sp, _ = openSpool(dir, 1<<20, 1<<20)
	if !sp.empty() {
		t.Fatalf("spool holds %d bytes of a segment the cursor passed", sp.Bytes())
	}
	if _, err := os.Stat(sp.segPath(1)); !os.IsNotExist(err) {
		t.Fatalf("segment 1 still on disk: %v", err)
	}
	sp.append([]Message{msg(3)})
	if _, err := os.Stat(sp.segPath(2)); err != nil {
		t.Fatalf("the next records went elsewhere than segment 2: %v", err)
	}
	if got := readN(t, sp, 10); len(got) != 1 || string(got[0].Value) != "3" {
		t.Fatalf("read %v; want only message 3", got)
	}
}

// peek reads the live segment only up to its last whole append: bytes of
// a write still in progress (or about to be cut off) are not sent.
func TestSpoolPeekStopsAtTheLastWholeAppend(t *testing.T) {
	dir := t.TempDir()
	sp, _ := openSpool(dir, 1<<20, 1<<20)
	sp.append([]Message{msg(1)})
	f, _ := os.OpenFile(sp.segPath(1), os.O_APPEND|os.O_WRONLY, 0)
	f.Write(encode(msg(2))) // as if an append were mid-way
	f.Close()
	msgs, _, err := sp.peek(10, math.MaxInt)
	if err != nil || len(msgs) != 1 || string(msgs[0].Value) != "1" {
		t.Fatalf("peek = %v, %v; want only message 1", msgs, err)
	}
}

// An earlier build's cursor is trusted only for the segment it names: it
// reused segment numbers, so a stale one must not delete unsent segments.
func TestSpoolLegacyCursor(t *testing.T) {
	dir := t.TempDir()
	sp, _ := openSpool(dir, 1<<20, 1<<20)
	sp.append([]Message{msg(1), msg(2)})
	sp.close()
	os.WriteFile(filepath.Join(dir, legacyCursorFile), []byte("5 0"), 0o600)
	sp, _ = openSpool(dir, 1<<20, 1<<20)
	if got := readN(t, sp, 10); len(got) != 2 {
		t.Fatalf("read %d messages under a stale legacy cursor; want both", len(got))
	}
	if _, err := os.Stat(filepath.Join(dir, legacyCursorFile)); !os.IsNotExist(err) {
		t.Fatalf("the legacy cursor outlived the first commit: %v", err)
	}
}

// A cursor past the end of its segment (written by another build, or
// damaged) does not make the spool's size negative or hide new records.
func TestSpoolCursorBeyondItsSegment(t *testing.T) {
	dir := t.TempDir()
	sp, _ := openSpool(dir, 1<<20, 1<<20)
	sp.append([]Message{msg(1)})
	sp.close()
	os.WriteFile(filepath.Join(dir, cursorFile), []byte("1 999999"), 0o600)
	sp, _ = openSpool(dir, 1<<20, 1<<20)
	if sp.Bytes() != 0 {
		t.Fatalf("spool size %d after a cursor past the end; want 0", sp.Bytes())
	}
	sp.append([]Message{msg(2)})
	if got := readN(t, sp, 10); len(got) != 1 || string(got[0].Value) != "2" {
		t.Fatalf("read %v; want message 2", got)
	}
}

func TestSpoolSkipsATornTail(t *testing.T) {
	dir := t.TempDir()
	sp, _ := openSpool(dir, 1<<20, 1<<20)
	sp.append([]Message{msg(1), msg(2)})
	sp.close()
	// A crash mid-append leaves half a record at the end of the segment.
	seg := filepath.Join(dir, fmt.Sprintf("%012d.seg", 1))
	f, _ := os.OpenFile(seg, os.O_APPEND|os.O_WRONLY, 0)
	f.Write(encode(msg(3))[:7])
	f.Close()

	sp, _ = openSpool(dir, 1<<20, 1<<20)
	sp.append([]Message{msg(4)})
	got := readN(t, sp, 10)
	if len(got) != 3 || string(got[2].Value) != "4" {
		t.Fatalf("got %d messages %v; want 1, 2, 4", len(got), got)
	}
}

func TestSpoolLimit(t *testing.T) {
	sp, _ := openSpool(t.TempDir(), 100, 1<<20)
	var in []Message
	for i := 0; i < 20; i++ {
		in = append(in, msg(i))
	}
	n, err := sp.append(in)
	if !errors.Is(err, ErrSpoolFull) || n == 0 || n == 20 {
		t.Fatalf("append = %d, %v; want a partial write and ErrSpoolFull", n, err)
	}
}

func readN(t *testing.T, sp *spool, n int) []Message {
	t.Helper()
	var out []Message
	for len(out) < n && !sp.empty() {
		msgs, pos, err := sp.peek(n-len(out), math.MaxInt)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, msgs...)
		if err := sp.commit(pos); err != nil {
			t.Fatal(err)
		}
		if len(msgs) == 0 && !pos.segDone {
			break
		}
	}
	return out
}

// flakySender fails while down is set, and records what it accepted.
type flakySender struct {
	mu   sync.Mutex
	down bool
	got  []Message
	sent chan struct{}
}

func (f *flakySender) Send(_ context.Context, msgs []Message) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down {
		return errors.New("broker unreachable")
	}
	f.got = append(f.got, msgs...)
	select {
	case f.sent <- struct{}{}:
	default:
	}
	return nil
}

func (f *flakySender) setDown(d bool) { f.mu.Lock(); f.down = d; f.mu.Unlock() }
func (f *flakySender) count() int     { f.mu.Lock(); defer f.mu.Unlock(); return len(f.got) }

func TestProducerSpoolsWhileDownAndDeliversInOrder(t *testing.T) {
	s := &flakySender{down: true, sent: make(chan struct{}, 1)}
	p, err := New(Config{Dir: t.TempDir(), MemoryLimit: 50, BatchSize: 20, RetryEvery: time.Millisecond, Linger: time.Millisecond}, s)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { p.Run(ctx); close(done) }()

	for i := 0; i < 1000; i++ {
		p.Enqueue(msg(i)) // must not block although the sender is down
	}
	waitFor(t, func() bool { return p.Stats().Spooled > 0 })
	if st := p.Stats(); st.Dropped != 0 || st.Sent != 0 {
		t.Fatalf("while down: %+v", st)
	}
	s.setDown(false)
	waitFor(t, func() bool { return s.count() >= 1000 })
	cancel()
	<-done
	for i, m := range s.got[:1000] {
		if string(m.Value) != strconv.Itoa(i) {
			t.Fatalf("message %d = %s: order lost", i, m.Value)
		}
	}
	if st := p.Stats(); st.Dropped != 0 || st.SpoolBytes != 0 {
		t.Fatalf("after recovery: %+v", st)
	}
}

func TestProducerDropsOnlyPastTheSpoolLimit(t *testing.T) {
	s := &flakySender{down: true}
	p, _ := New(Config{Dir: t.TempDir(), MemoryLimit: 10, SpoolLimit: 1000}, s)
	for i := 0; i < 500; i++ {
		p.Enqueue(msg(i))
	}
	st := p.Stats()
	if st.Dropped == 0 || st.Spooled == 0 || st.Spooled+st.Dropped+uint64(st.Memory) != 500 {
		t.Fatalf("stats %+v: every message must be spooled, in memory or counted as dropped", st)
	}
}

// Large messages (request logs with captured bodies) overflow to the spool
// by bytes, not only by count: 20,000 of 1 MB would be 20 GB of memory.
func TestProducerMemoryIsBoundedInBytes(t *testing.T) {
	s := &flakySender{down: true}
	p, _ := New(Config{Dir: t.TempDir(), MemoryLimit: 1000, MemoryBytes: 10_000}, s)
	big := bytes.Repeat([]byte("x"), 999) // 1,000 bytes with its key
	for i := 0; i < 25; i++ {
		p.Enqueue(Message{Topic: "t", Key: []byte("k"), Value: big})
	}
	st := p.Stats()
	if st.Memory > 10 || st.Spooled < 15 || st.Spooled+uint64(st.Memory) != 25 {
		t.Fatalf("stats %+v: at most 10 messages of 1,000 bytes fit in 10,000 bytes; the rest go to the spool", st)
	}
}

func TestProducerShutdownSpoolsWhatKafkaDidNotTake(t *testing.T) {
	dir := t.TempDir()
	s := &flakySender{down: true}
	p, _ := New(Config{Dir: dir, RetryEvery: time.Hour}, s)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { p.Run(ctx); close(done) }()
	for i := 0; i < 10; i++ {
		p.Enqueue(msg(i))
	}
	cancel()
	<-done
	// A new process finds them in the spool and sends them.
	s2 := &flakySender{sent: make(chan struct{}, 1)}
	p2, _ := New(Config{Dir: dir, Linger: time.Millisecond}, s2)
	ctx2, cancel2 := context.WithCancel(context.Background())
	done2 := make(chan struct{})
	go func() { p2.Run(ctx2); close(done2) }()
	// Stop p2 before the test ends: its spool files must be closed before
	// t.TempDir's cleanup removes the directory.
	defer func() { cancel2(); <-done2 }()
	waitFor(t, func() bool { return s2.count() == 10 })
}

// A process killed before its producer sent anything: in write-through
// mode the next process finds every message; in memory mode they are gone.
func TestWriteThroughSurvivesAKill(t *testing.T) {
	for _, wt := range []bool{true, false} {
		t.Run(fmt.Sprintf("write_through=%v", wt), func(t *testing.T) {
			dir := t.TempDir()
			p, err := New(Config{Dir: dir, WriteThrough: wt}, &flakySender{})
			if err != nil {
				t.Fatal(err)
			}
			for i := range 100 {
				p.Enqueue(msg(i))
			}
			// kill -9: no Run, no shutdown; the process simply ends, and the
			// kernel closes its files (and so its lock on the dir). The
			// next one sends what its spool holds.
			p.spool.close()
			s2 := &flakySender{}
			p2, err := New(Config{Dir: dir}, s2)
			if err != nil {
				t.Fatal(err)
			}
			if !p2.drain(context.Background()) {
				t.Fatal("drain failed")
			}
			want := 0
			if wt {
				want = 100
			}
			if len(s2.got) != want {
				t.Fatalf("the next process sent %d messages, want %d", len(s2.got), want)
			}
			for i, m := range s2.got {
				if string(m.Value) != strconv.Itoa(i) {
					t.Fatalf("message %d = %s: order lost", i, m.Value)
				}
			}
		})
	}
}

// A clean stop sends what is queued, in write-through mode too (where it
// all sits in the spool): a deploy that replaces the spool directory must
// not take events with it.
func TestShutdownSendsWhatIsQueued(t *testing.T) {
	for _, wt := range []bool{true, false} {
		t.Run(fmt.Sprintf("write_through=%v", wt), func(t *testing.T) {
			s := &flakySender{}
			p, err := New(Config{Dir: t.TempDir(), WriteThrough: wt, Linger: time.Hour}, s)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() { p.Run(ctx); close(done) }()
			for i := range 10 {
				p.Enqueue(msg(i))
			}
			cancel()
			<-done
			if st := p.Stats(); s.count() != 10 || st.SpoolBytes != 0 {
				t.Fatalf("after a clean stop with Kafka up: %d sent, stats %+v; want all 10 sent, nothing left", s.count(), st)
			}
		})
	}
}

// hangingSender never answers: each Send waits for its context to end.
type hangingSender struct {
	calls   atomic.Int32
	started chan struct{}
}

func (h *hangingSender) Send(ctx context.Context, _ []Message) error {
	if h.calls.Add(1) == 1 {
		close(h.started)
	}
	<-ctx.Done()
	return ctx.Err()
}

// A stop that comes while Kafka hangs does not try again: the send that
// timed out decides, and the stop takes one send timeout, not two.
func TestShutdownDoesNotRetryAHungKafka(t *testing.T) {
	s := &hangingSender{started: make(chan struct{})}
	p, err := New(Config{Dir: t.TempDir(), WriteThrough: true, Linger: time.Millisecond, SendTimeout: 100 * time.Millisecond}, s)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { p.Run(ctx); close(done) }()
	p.Enqueue(msg(1))
	<-s.started
	cancel()
	<-done
	if n := s.calls.Load(); n != 1 {
		t.Fatalf("%d sends; want the hung one only", n)
	}
	if st := p.Stats(); st.SpoolBytes == 0 {
		t.Fatalf("stats %+v: the message must stay in the spool", st)
	}
}

// Write-through while sending: every message arrives once, in order, and
// the spool empties behind the sender.
func TestWriteThroughDeliversInOrderWhileSending(t *testing.T) {
	s := &flakySender{sent: make(chan struct{}, 1)}
	p, err := New(Config{Dir: t.TempDir(), WriteThrough: true, BatchSize: 64, Linger: time.Millisecond}, s)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { p.Run(ctx); close(done) }()
	const n = 5000
	for i := range n {
		p.Enqueue(msg(i))
	}
	waitFor(t, func() bool { return s.count() >= n })
	waitFor(t, func() bool { return p.Stats().SpoolBytes == 0 })
	cancel()
	<-done
	if len(s.got) != n {
		t.Fatalf("sent %d messages, want %d", len(s.got), n)
	}
	for i, m := range s.got {
		if string(m.Value) != strconv.Itoa(i) {
			t.Fatalf("message %d = %s: order lost", i, m.Value)
		}
	}
	if st := p.Stats(); st.Dropped != 0 || st.Spooled != 0 || st.Sent != n {
		t.Fatalf("stats %+v: want %d sent, nothing spooled as a detour or dropped", st, n)
	}
}

// In write-through mode too, Spooled counts what waited on disk for Kafka,
// and an outage delays messages without reordering or losing them.
func TestWriteThroughCountsWhatWaitsForKafka(t *testing.T) {
	s := &flakySender{down: true}
	p, err := New(Config{Dir: t.TempDir(), WriteThrough: true, Linger: time.Millisecond, RetryEvery: time.Millisecond}, s)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { p.Run(ctx); close(done) }()
	p.Enqueue(msg(0))
	waitFor(t, p.down.Load) // a send failed
	for i := 1; i <= 10; i++ {
		p.Enqueue(msg(i))
	}
	if st := p.Stats(); st.Spooled != 10 || st.Sent != 0 || st.Memory != 0 {
		t.Fatalf("while Kafka is down: %+v; want the 10 messages enqueued since counted as spooled", st)
	}
	s.setDown(false)
	waitFor(t, func() bool { return s.count() == 11 })
	cancel()
	<-done
	for i, m := range s.got {
		if string(m.Value) != strconv.Itoa(i) {
			t.Fatalf("message %d = %s: order lost", i, m.Value)
		}
	}
}

// TestKafkaRoundTrip sends through the real broker of `make services`.
func TestKafkaRoundTrip(t *testing.T) {
	brokers := testenv.Kafka(t)
	// KafkaTopic waits until the partition's leader serves it (a send just
	// after CreateTopics can fail with Unknown Topic, and this test counts
	// any failed send) and deletes the topic with a connection of its own.
	topic := testenv.KafkaTopic(t, brokers, "outbox", 1)

	// The largest sends the outbox makes: MaxSendBatch messages, SendBytes
	// bytes, one partition. Kafka must take each as it is.
	ks := NewKafkaSenderBatch(brokers, MaxSendBatch)
	// Its own transport: kafka-go's default one caches metadata for seconds,
	// so with -count > 1 it would not know this run's topic.
	tr := &kafka.Transport{}
	defer tr.CloseIdleConnections()
	ks.W.Transport = tr
	defer ks.Close()
	p, _ := New(Config{Dir: t.TempDir(), BatchSize: MaxSendBatch, Linger: time.Hour}, ks)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	go func() { p.Run(ctx); close(done) }()
	const n = 3 * MaxSendBatch
	value := func(i int) string { return fmt.Sprintf("%-*d", SendBytes/MaxSendBatch-len("org_1"), i) }
	for i := 0; i < n; i++ {
		p.Enqueue(Message{Topic: topic, Key: []byte("org_1"), Value: []byte(value(i))})
	}

	r := kafka.NewReader(kafka.ReaderConfig{Brokers: brokers, Topic: topic, Partition: 0, MaxWait: 100 * time.Millisecond})
	defer r.Close()
	rctx, rcancel := context.WithTimeout(ctx, 30*time.Second)
	defer rcancel()
	for i := 0; i < n; i++ {
		m, err := r.ReadMessage(rctx)
		if err != nil {
			t.Fatalf("reading message %d: %v", i, err)
		}
		if string(m.Value) != value(i) {
			t.Fatalf("message %d = %s", i, m.Value)
		}
	}
	// The reader can have the last batch before Send has returned and been
	// counted: stop the producer before reading its stats.
	cancel()
	<-done
	if st := p.Stats(); st.Sent != n || st.Spooled != 0 {
		t.Fatalf("stats %+v: every send must have been taken whole", st)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 20s")
		}
		time.Sleep(time.Millisecond)
	}
}

func TestOversizedMessageIsDroppedNotStalled(t *testing.T) {
	s := &flakySender{}
	p, _ := New(Config{Dir: t.TempDir()}, s)
	p.Enqueue(Message{Topic: "t", Value: make([]byte, MaxMessageBytes+1)})
	p.Enqueue(msg(1))
	if st := p.Stats(); st.Dropped != 1 || st.Memory != 1 {
		t.Fatalf("stats %+v: the oversized message must be dropped and counted, the next one queued", st)
	}
}

// heldSender holds its first send until release, then fails it (fail, as
// a broker that times out would) or lets it succeed (as one that answers
// late does); later sends succeed.
type heldSender struct {
	flakySender
	fail             bool
	started, release chan struct{}
	once             sync.Once
}

func (h *heldSender) Send(ctx context.Context, msgs []Message) error {
	first := false
	h.once.Do(func() { first = true })
	if first {
		close(h.started)
		<-h.release
		if h.fail {
			return errors.New("broker timed out")
		}
	}
	return h.flakySender.Send(ctx, msgs)
}

// overflowWhileHeld runs a producer (memory for 10) on s, has messages 0–4
// taken for s's held first send, enqueues 5 to n-1 meanwhile (past 10 in
// memory: to the spool, behind 0–4), and releases the send. It returns the
// producer and a stop that ends Run.
func overflowWhileHeld(t *testing.T, s *heldSender, n int) (*Producer, func()) {
	t.Helper()
	p, err := New(Config{Dir: t.TempDir(), MemoryLimit: 10, BatchSize: 5, RetryEvery: time.Millisecond, Linger: time.Millisecond}, s)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { p.Run(ctx); close(done) }()
	for i := range 5 {
		p.Enqueue(msg(i))
	}
	<-s.started // messages 0–4 are on the wire
	for i := 5; i < n; i++ {
		p.Enqueue(msg(i))
	}
	close(s.release)
	return p, func() { cancel(); <-done }
}

// Messages enqueued while a send hangs overflow memory into the spool; the
// batch that then fails is older than them and must still go first.
func TestProducerKeepsOrderWhenAHungSendFails(t *testing.T) {
	s := &heldSender{fail: true, started: make(chan struct{}), release: make(chan struct{})}
	const n = 40
	_, stop := overflowWhileHeld(t, s, n)
	waitFor(t, func() bool { return s.count() >= n })
	stop()
	for i, m := range s.got {
		if string(m.Value) != strconv.Itoa(i) {
			t.Fatalf("message %d = %s: order lost", i, m.Value)
		}
	}
}

// A segment that cannot be created (too many open files, a full disk) fails
// that append only: the next one, once the cause is gone, succeeds.
func TestSpoolRecoversFromAFailedRoll(t *testing.T) {
	dir := t.TempDir()
	sp, err := openSpool(dir, 1<<20, 100)
	if err != nil {
		t.Fatal(err)
	}
	val := func(s string, n int) Message {
		return Message{Topic: "t", Key: []byte("k"), Value: []byte(s + strings.Repeat(".", n))}
	}
	if n, err := sp.append([]Message{val("a", 40)}); n != 1 || err != nil {
		t.Fatalf("first append = %d, %v", n, err)
	}
	// The next segment's name is taken by a directory: creating it fails.
	blocker := sp.segPath(sp.nextSeq)
	if err := os.Mkdir(blocker, 0o700); err != nil {
		t.Fatal(err)
	}
	if n, err := sp.append([]Message{val("b", 40)}); n != 0 || err == nil {
		t.Fatalf("append needing a new segment = %d, %v; want a failure", n, err)
	}
	if err := os.Remove(blocker); err != nil {
		t.Fatal(err)
	}
	if n, err := sp.append([]Message{val("c", 10)}); n != 1 || err != nil {
		t.Fatalf("append after the failure = %d, %v", n, err)
	}
	got := readN(t, sp, 10)
	if len(got) != 2 || got[0].Value[0] != 'a' || got[1].Value[0] != 'c' {
		t.Fatalf("read %d messages, want a then c", len(got))
	}
}

// The in-flight batch is spooled ahead of an overflow in case its send
// fails; when the send succeeds, it must not be sent a second time from the
// spool: sent_total would count it twice and Kafka would hold two copies.
func TestProducerSendsASlowBatchOnceWhenMemoryOverflows(t *testing.T) {
	s := &heldSender{started: make(chan struct{}), release: make(chan struct{})}
	const n = 40
	p, stop := overflowWhileHeld(t, s, n)
	waitFor(t, func() bool { st := p.Stats(); return st.SpoolBytes == 0 && st.Memory == 0 && s.count() >= n })
	stop()
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, m := range s.got {
		if string(m.Value) != strconv.Itoa(i) {
			t.Fatalf("message %d = %s: sent twice or out of order (%d sent for %d enqueued)", i, m.Value, len(s.got), n)
		}
	}
	if st := p.Stats(); st.Sent != n || len(s.got) != n {
		t.Fatalf("stats %+v, %d sent: want each of the %d messages sent once", st, len(s.got), n)
	}
}

// sizeSender records the message count and bytes of every send.
type sizeSender struct {
	flakySender
	sends [][2]int // messages, bytes
}

func (s *sizeSender) Send(ctx context.Context, msgs []Message) error {
	if err := s.flakySender.Send(ctx, msgs); err != nil {
		return err
	}
	n := 0
	for _, m := range msgs {
		n += len(m.Key) + len(m.Value)
	}
	s.mu.Lock()
	s.sends = append(s.sends, [2]int{len(msgs), n})
	s.mu.Unlock()
	return nil
}

// A send carries at most BatchBytes bytes (one message at least), from
// memory and from the spool alike, so the Kafka writer never splits it.
func TestSendsAreBoundedInBytes(t *testing.T) {
	s := &sizeSender{flakySender: flakySender{down: true}}
	p, err := New(Config{Dir: t.TempDir(), MemoryLimit: 40, BatchSize: 1000, BatchBytes: 1000,
		RetryEvery: time.Millisecond, Linger: time.Millisecond}, s)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { p.Run(ctx); close(done) }()
	value := func(i int) []byte { return []byte(fmt.Sprintf("%-99d", i)) } // 99 bytes + a 1-byte key
	for i := 0; i < 100; i++ {                                             // 40 in memory, the rest spooled while down
		p.Enqueue(Message{Topic: "t", Key: []byte("k"), Value: value(i)})
	}
	p.Enqueue(Message{Topic: "t", Key: []byte("k"), Value: make([]byte, 5000)}) // alone over the bound
	s.setDown(false)
	waitFor(t, func() bool { return s.count() >= 101 })
	cancel()
	<-done
	for i, m := range s.got[:100] {
		if !bytes.Equal(m.Value, value(i)) {
			t.Fatalf("message %d = %q: order lost", i, m.Value)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, send := range s.sends {
		if send[1] > 1000 && send[0] > 1 {
			t.Fatalf("a send of %d messages carried %d bytes, over the bound of 1000", send[0], send[1])
		}
	}
	if len(s.sends) < 10 {
		t.Fatalf("%d sends for 10,000 bytes in a bound of 1,000", len(s.sends))
	}
}

func TestSendable(t *testing.T) {
	m := func(n int) Message { return Message{Value: make([]byte, n)} }
	for _, tt := range []struct {
		msgs     []Message
		n, bytes int
		want     int
	}{
		{nil, 10, 100, 0},
		{[]Message{m(40), m(40), m(40)}, 10, 100, 2},
		{[]Message{m(40), m(40), m(20)}, 10, 100, 3},
		{[]Message{m(500), m(1)}, 10, 100, 1}, // one message at least
		{[]Message{m(1), m(1), m(1)}, 2, 100, 2},
	} {
		if got := sendable(tt.msgs, tt.n, tt.bytes); got != tt.want {
			t.Errorf("sendable(%d messages, %d, %d) = %d, want %d", len(tt.msgs), tt.n, tt.bytes, got, tt.want)
		}
	}
}

// A memory limit under the batch size still wakes the sender before memory
// overflows to the spool: with a healthy Kafka nothing goes to disk.
// (Found in review: at BatchSize 1,024 and MemoryLimit 500 every message
// past the 500th of each Linger was spooled.)
func TestSmallMemoryLimitWakesTheSender(t *testing.T) {
	s := &flakySender{}
	p, err := New(Config{Dir: t.TempDir(), MemoryLimit: 500, BatchSize: MaxSendBatch, Linger: time.Hour}, s)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { p.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	for i := 0; i < 2000; i++ {
		p.Enqueue(msg(i))
		if i%100 == 99 {
			// Let the woken sender take what waits: a send is quick here.
			waitFor(t, func() bool { return p.Stats().Memory < 250 })
		}
	}
	if st := p.Stats(); st.Spooled != 0 {
		t.Fatalf("Kafka healthy, yet %d messages went through the spool (stats %+v)", st.Spooled, st)
	}
}

// A second producer on a spool dir in use is refused, naming the process
// that holds it: two appending to one spool interleave records each takes
// for its own and delete segments holding the other's unsent messages.
func TestSpoolDirTakesOneProducer(t *testing.T) {
	dir := t.TempDir()
	p, err := New(Config{Dir: dir}, &flakySender{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = p.Run(ctx); close(done) }()
	if _, err := New(Config{Dir: dir}, &flakySender{}); err == nil ||
		!strings.Contains(err.Error(), fmt.Sprintf("in use by another process (pid %d)", os.Getpid())) {
		t.Fatalf("second producer on the dir: %v", err)
	}
	cancel()
	<-done
	if p2, err := New(Config{Dir: dir}, &flakySender{}); err != nil {
		t.Fatalf("after the first stopped: %v", err)
	} else {
		p2.spool.close()
	}
}

// gatedSender sends one batch each time the test allows it.
type gatedSender struct {
	allow, done chan struct{}
	mu          sync.Mutex
	got         int
}

func (g *gatedSender) Send(_ context.Context, msgs []Message) error {
	<-g.allow
	g.mu.Lock()
	g.got += len(msgs)
	g.mu.Unlock()
	g.done <- struct{}{}
	return nil
}

// Disk use stays near spool_limit while the spool is drained and appended
// to at once: the sent start of a segment stays on disk until it rolls,
// and 64 MiB segments made a 1 MiB limit 65 MiB.
func TestSpoolDiskUseStaysNearTheLimit(t *testing.T) {
	dir := t.TempDir()
	const limit = 1 << 20
	s := &gatedSender{allow: make(chan struct{}), done: make(chan struct{})}
	p, err := New(Config{Dir: dir, SpoolLimit: limit, MemoryLimit: 1, BatchSize: 100, Linger: time.Millisecond}, s)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = p.Run(ctx); close(done) }()
	value := bytes.Repeat([]byte("x"), 1000)
	peak := int64(0)
	for round := range 100 { // 5 MB through the spool, 50 KB at a time
		for i := range 50 {
			p.Enqueue(Message{Topic: "t", Key: []byte("k"), Value: append([]byte(strconv.Itoa(round*50+i)), value...)})
		}
		s.allow <- struct{}{}
		<-s.done
		var size int64
		entries, _ := os.ReadDir(dir)
		for _, e := range entries {
			if fi, err := e.Info(); err == nil {
				size += fi.Size()
			}
		}
		peak = max(peak, size)
	}
	go func() { // let the shutdown's drain through
		for range s.done {
		}
	}()
	close(s.allow)
	cancel()
	<-done
	close(s.done)
	if peak > 2*limit {
		t.Fatalf("the spool dir reached %d bytes for a spool_limit of %d", peak, limit)
	}
	if st := p.Stats(); st.Dropped != 0 {
		t.Fatalf("dropped %d", st.Dropped)
	}
}

// A batch in flight when memory overflows into a full spool is counted as
// dropped only if its send then fails: delivered, it is sent, not dropped.
func TestInFlightBatchDeliveredIsNotCountedDropped(t *testing.T) {
	s := &heldSender{started: make(chan struct{}), release: make(chan struct{})}
	p, err := New(Config{Dir: t.TempDir(), MemoryLimit: 10, BatchSize: 5, SpoolLimit: 1, RetryEvery: time.Hour, Linger: time.Hour}, s)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = p.Run(ctx); close(done) }()
	for i := range 5 {
		p.Enqueue(msg(i))
	}
	<-s.started               // messages 0–4 are on the wire
	for i := 5; i < 16; i++ { // memory overflows into a spool with no room
		p.Enqueue(msg(i))
	}
	close(s.release)
	waitFor(t, func() bool { return p.Stats().Sent >= 5 })
	cancel()
	<-done
	if st := p.Stats(); st.Sent+st.Dropped > st.Enqueued || st.Sent < 5 {
		t.Fatalf("%+v: sent and dropped add up to more than enqueued", st)
	}
}

// A Tally's counters never go back when a producer stops (a config reload
// to other brokers); its gauges are the running producers'.
func TestTallyKeepsTheCountsOfStoppedProducers(t *testing.T) {
	var tally Tally
	sent := func(n int) *Producer {
		p, err := New(Config{Dir: t.TempDir()}, nil)
		if err != nil {
			t.Fatal(err)
		}
		p.sent.Add(uint64(n))
		return p
	}
	a, b := sent(20), sent(1)
	tally.Add(a)
	tally.Remove(a)
	tally.Add(b)
	tally.Remove(sent(5)) // never added: not counted
	if got := tally.Stats().Sent; got != 21 {
		t.Fatalf("sent = %d after one producer stopped, want 21", got)
	}
}
