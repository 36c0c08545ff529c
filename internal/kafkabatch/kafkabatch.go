// Package kafkabatch reads Kafka messages in batches for the platform's
// consumers (request-log ingester, event ingester, deliverer), which each
// store a batch in one Postgres transaction before committing its offsets.
package kafkabatch

import (
	"context"
	"time"

	"github.com/segmentio/kafka-go"
)

// Fetch blocks until one message arrives (or ctx ends: its error is
// returned), then takes whatever else arrives within wait, up to size
// messages (at least one). A message not taken when the wait ends stays in
// the reader for the next batch.
func Fetch(ctx context.Context, r *kafka.Reader, size int, wait time.Duration) ([]kafka.Message, error) {
	m, err := r.FetchMessage(ctx)
	if err != nil {
		return nil, err
	}
	size = max(size, 1)
	batch := make([]kafka.Message, 1, size)
	batch[0] = m
	wctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	for len(batch) < size {
		m, err := r.FetchMessage(wctx)
		if err != nil {
			break
		}
		batch = append(batch, m)
	}
	return batch, nil
}
