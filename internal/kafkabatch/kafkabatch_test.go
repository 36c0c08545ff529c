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
