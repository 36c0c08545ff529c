package kafkabatch_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/gatehouse/gatehouse/internal/kafkabatch"
	"github.com/gatehouse/gatehouse/internal/testenv"
)

// GroupLag counts what a group has not committed, over every partition,
// whether or not the group has committed anything yet.
func TestGroupLag(t *testing.T) {
	brokers := testenv.Kafka(t)
	topic := testenv.KafkaTopic(t, brokers, "lag", 2)
	group := "lag-test-" + testenv.Suffix()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	w := &kafka.Writer{Addr: kafka.TCP(brokers...), Topic: topic, Balancer: &kafka.RoundRobin{}, BatchSize: 1}
	defer w.Close()
	for i := range 10 {
		if err := w.WriteMessages(ctx, kafka.Message{Value: fmt.Appendf(nil, "m%d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	c := &kafka.Client{Addr: kafka.TCP(brokers...)}
	if lag, err := kafkabatch.GroupLag(ctx, c, group, topic); err != nil || lag != 10 {
		t.Fatalf("before any commit: lag %d, %v; want 10", lag, err)
	}
	r := kafka.NewReader(kafka.ReaderConfig{Brokers: brokers, GroupID: group, Topic: topic, StartOffset: kafka.FirstOffset})
	defer r.Close()
	msgs, err := kafkabatch.Fetch(ctx, r, 4, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.CommitMessages(ctx, msgs...); err != nil {
		t.Fatal(err)
	}
	if lag, err := kafkabatch.GroupLag(ctx, c, group, topic); err != nil || lag != int64(10-len(msgs)) {
		t.Fatalf("after committing %d: lag %d, %v; want %d", len(msgs), lag, err, 10-len(msgs))
	}
}

// A batch of large messages (request logs with captured bodies reach a
// megabyte) stops at about BatchBytes rather than at its count, and what it
// leaves is the next batch's: a consumer sized for thousands of small
// messages does not hold gigabytes.
func TestFetchBoundsTheBatchBytes(t *testing.T) {
	brokers := testenv.Kafka(t)
	topic := testenv.KafkaTopic(t, brokers, "fetchbytes", 1)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	const n, size = 48, 1_000_000
	// Its own transport: the default one caches metadata from before the topic.
	w := &kafka.Writer{Addr: kafka.TCP(brokers...), Topic: topic, BatchTimeout: time.Millisecond, Transport: &kafka.Transport{}}
	defer w.Close()
	msgs := make([]kafka.Message, n)
	for i := range msgs {
		msgs[i] = kafka.Message{Key: fmt.Appendf(nil, "k%d", i), Value: make([]byte, size)}
	}
	if err := w.WriteMessages(ctx, msgs...); err != nil {
		t.Fatal(err)
	}
	r := kafka.NewReader(kafka.ReaderConfig{Brokers: brokers, Topic: topic, Partition: 0,
		MaxBytes: 16 << 20, QueueCapacity: kafkabatch.QueueCapacity})
	defer r.Close()
	var got []kafka.Message
	for len(got) < n {
		batch, err := kafkabatch.Fetch(ctx, r, 5000, 500*time.Millisecond)
		if err != nil {
			t.Fatalf("after %d messages: %v", len(got), err)
		}
		bytes := 0
		for _, m := range batch {
			bytes += len(m.Key) + len(m.Value)
		}
		if bytes > kafkabatch.BatchBytes+size+10 {
			t.Fatalf("a batch of %d messages holds %d bytes, over the bound of %d (and one message)", len(batch), bytes, kafkabatch.BatchBytes)
		}
		got = append(got, batch...)
	}
	for i, m := range got {
		if m.Offset != int64(i) {
			t.Fatalf("message %d has offset %d: a batch skipped or repeated what the last one left", i, m.Offset)
		}
	}
	if len(got) != n {
		t.Fatalf("read %d messages, wrote %d", len(got), n)
	}
}
