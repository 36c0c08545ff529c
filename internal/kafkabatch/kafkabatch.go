// Package kafkabatch reads Kafka messages in batches for the platform's
// consumers (request-log ingester, event ingester, deliverer), which each
// store a batch in one Postgres transaction before committing its offsets.
package kafkabatch

import (
	"context"
	"fmt"
	"time"

	"github.com/segmentio/kafka-go"
)

// BatchBytes bounds the keys and values of one batch that Fetch returns.
// Batches are sized in messages for the common small ones; a message can
// be up to a megabyte (a request log with captured bodies), and batches of
// thousands of those would take gigabytes between the one being fetched,
// the one waiting and the one being stored.
const BatchBytes = 32 << 20

// QueueCapacity is the reader's read-ahead, in messages, for the same
// reason: kafka-go's default, which keeps up with the consumers here (the
// request-log ingestion benchmark measured the same rate with 100 as with
// 5,000).
const QueueCapacity = 100

// Fetch blocks until one message arrives (or ctx ends: its error is
// returned), then takes whatever else arrives within wait, up to size
// messages and about BatchBytes (at least one message). A message not
// taken when the wait ends stays in the reader for the next batch.
func Fetch(ctx context.Context, r *kafka.Reader, size int, wait time.Duration) ([]kafka.Message, error) {
	m, err := r.FetchMessage(ctx)
	if err != nil {
		return nil, err
	}
	size = max(size, 1)
	batch := make([]kafka.Message, 1, size)
	batch[0] = m
	n := len(m.Key) + len(m.Value)
	wctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	for len(batch) < size && n < BatchBytes {
		m, err := r.FetchMessage(wctx)
		if err != nil {
			break
		}
		batch = append(batch, m)
		n += len(m.Key) + len(m.Value)
	}
	return batch, nil
}

// GroupLag is how many messages of topic the consumer group has not
// committed yet, summed over the topic's partitions: each partition's end
// offset less the group's committed offset (its first offset when the group
// has committed none there, as the consumers start from the first). It is
// read from the brokers, so it keeps growing while a consumer is stuck and
// does not depend on which replica holds which partition.
func GroupLag(ctx context.Context, c *kafka.Client, group, topic string) (int64, error) {
	meta, err := c.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{topic}})
	if err != nil {
		return 0, err
	}
	if len(meta.Topics) != 1 || meta.Topics[0].Error != nil {
		if len(meta.Topics) == 1 {
			return 0, meta.Topics[0].Error
		}
		return 0, fmt.Errorf("topic %s: no metadata", topic)
	}
	var parts []int
	for _, p := range meta.Topics[0].Partitions {
		parts = append(parts, p.ID)
	}
	committed, err := c.OffsetFetch(ctx, &kafka.OffsetFetchRequest{GroupID: group, Topics: map[string][]int{topic: parts}})
	if err != nil {
		return 0, err
	}
	if committed.Error != nil {
		return 0, committed.Error
	}
	offsets := func(at int64) (map[int]int64, error) {
		req := make([]kafka.OffsetRequest, len(parts))
		for i, p := range parts {
			req[i] = kafka.OffsetRequest{Partition: p, Timestamp: at}
		}
		res, err := c.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{topic: req}})
		if err != nil {
			return nil, err
		}
		out := make(map[int]int64, len(parts))
		for _, p := range res.Topics[topic] {
			if p.Error != nil {
				return nil, p.Error
			}
			if at == kafka.FirstOffset {
				out[p.Partition] = p.FirstOffset
			} else {
				out[p.Partition] = p.LastOffset
			}
		}
		return out, nil
	}
	first, err := offsets(kafka.FirstOffset)
	if err != nil {
		return 0, err
	}
	last, err := offsets(kafka.LastOffset)
	if err != nil {
		return 0, err
	}
	var lag int64
	for _, p := range committed.Topics[topic] {
		if p.Error != nil {
			return 0, p.Error
		}
		from := p.CommittedOffset
		if from < first[p.Partition] { // none committed (-1), or retention passed it
			from = first[p.Partition]
		}
		lag += max(last[p.Partition]-from, 0)
	}
	return lag, nil
}

// WatchLag sets the group's lag on topic (GroupLag) at once and then every
// interval until ctx ends. A read that fails, or takes longer than the
// interval, keeps the last value and is passed to failed.
func WatchLag(ctx context.Context, brokers []string, group, topic string, every time.Duration,
	set func(int64), failed func(error)) {
	c := &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: every}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		rctx, cancel := context.WithTimeout(ctx, every)
		lag, err := GroupLag(rctx, c, group, topic)
		cancel()
		switch {
		case err == nil:
			set(lag)
		case ctx.Err() == nil:
			failed(err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
